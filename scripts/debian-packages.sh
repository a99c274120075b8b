# Sourced by the set-up scripts: `install_debian_packages PKG...` installs those of the Debian
# packages not installed yet (`apt-get`, as root), and nothing when all are. Nothing installed is
# ever removed to make room (`--no-remove`): a conflict stops the set-up with apt's message.
install_debian_packages() {
  local missing=()
  mapfile -t missing < <(debian_packages_missing "$@")
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-remove "${missing[@]}"
  fi
}

# `debian_packages_missing PKG...`: prints those of PKG not installed, one a line.
debian_packages_missing() {
  local p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || echo "$p"
  done
}

# `install_debian_backports PKG...`: installs PKG (if missing) from this release's backports suite
# (e.g. bookworm-backports), its dependencies from wherever apt finds them, through a source list
# and package lists used for this command only: the machine's apt sources stay as they are.
install_debian_backports() {
  local missing=() tmp suite status
  mapfile -t missing < <(debian_packages_missing "$@")
  [ "${#missing[@]}" -gt 0 ] || return 0
  suite="$(. /etc/os-release && echo "$VERSION_CODENAME")-backports"
  tmp="$(mktemp -d)"
  mkdir -p "$tmp/lists/partial"
  echo "deb http://deb.debian.org/debian $suite main" >"$tmp/backports.list"
  local opts=(-o "Dir::Etc::sourcelist=$tmp/backports.list" -o "Dir::State::lists=$tmp/lists")
  echo "installing from $suite: ${missing[*]}"
  apt-get "${opts[@]}" update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" install -y -qq --no-install-recommends \
      --no-remove -t "$suite" "${missing[@]}"
  status=$?
  rm -rf "$tmp"
  return "$status"
}
