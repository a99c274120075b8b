//! `meshcrypt device IFNAME`: the data plane on its own, like `wireguard-go -f IFNAME`. It creates
//! the TUN interface with a fresh private key and serves the standard UAPI socket at
//! `<uapi-dir>/<IFNAME>.sock`, so `wg setconf` / `wg set` / `wg show` configure and read it. The
//! interface is left down without addresses; SIGTERM or SIGINT removes it.

use meshcrypt_dataplane::{Device, DeviceConfig, PrivateKey};
use nix::sys::signal::{SigSet, Signal};

use crate::cli::DeviceArgs;
use crate::error::AgentError;

/// Runs the device until SIGTERM or SIGINT.
pub fn run(args: &DeviceArgs) -> Result<(), AgentError> {
    // Block the stop signals before any thread starts, so that only the wait below sees them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block()
        .map_err(|e| AgentError::Io { what: "block SIGTERM/SIGINT".into(), source: e.into() })?;

    let mut config = DeviceConfig::new(&args.ifname, PrivateKey::generate());
    config.uapi_dir = args.uapi_dir.clone();
    config.listen_port = args.port;
    config.workers = usize::from(args.workers);
    config.mtu = Some(args.mtu);
    let device = Device::create(config)?;
    device.set_flow_accounting(args.flow_accounting.and_then(|m| usize::try_from(m).ok()));
    tracing::info!(
        ifname = %args.ifname,
        port = device.listen_port(),
        uapi = %device.uapi_path().map(|p| p.display().to_string()).unwrap_or_default(),
        "device up; configure it with wg"
    );
    let signal =
        stop.wait().map_err(|e| AgentError::Io { what: "wait for a signal".into(), source: e.into() })?;
    tracing::info!(%signal, "stopping");
    if args.flow_accounting.is_some() {
        let flows = device.take_flows();
        let packets: u64 = flows.flows.iter().map(|f| f.packets).sum();
        tracing::info!(
            flows = flows.flows.len(),
            packets,
            overflow_packets = flows.overflow_packets,
            "flows counted"
        );
    }
    device.shutdown();
    Ok(())
}
