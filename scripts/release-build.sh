# shellcheck shell=bash
# Sourced by the scripts that run the release agent beside a harness of meshcrypt-integration
# (lab.sh, scale.sh, soak.sh).
#
# build_release_with BIN: builds the meshcrypt binary on its own, then the harness binary BIN.
# In one cargo invocation the two would share features, and meshcrypt would be built with
# meshcrypt-integration's (meshcrypt-registry's `test-support`): a different binary from the one
# the tests, the image and the bench build, and a second release build of it, with LTO, for
# whoever runs the demo and the tests.
build_release_with() {
  cargo build --release --locked -p meshcrypt --bin meshcrypt
  cargo build --release --locked -p meshcrypt-integration --bin "$1"
}
