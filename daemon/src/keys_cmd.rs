//! `meshcrypt keys`: create or inspect the node key; only the public half is ever printed.

use std::io::Write as _;

use meshcrypt_keyexchange::KeyStore;

use crate::cli::KeysCommand;
use crate::error::AgentError;

pub fn run(command: KeysCommand) -> Result<(), AgentError> {
    let (record, created, store) = match command {
        KeysCommand::Init(args) => {
            let store = KeyStore::open(&args.state_dir)?;
            let (record, created) = store.load_or_create()?;
            (record, created, store)
        }
        KeysCommand::Show(args) => {
            let store = KeyStore::open(&args.state_dir)?;
            let key = store.load()?.ok_or_else(|| AgentError::NoKey { dir: args.state_dir.clone() })?;
            (key, false, store)
        }
        KeysCommand::Rotate(args) => {
            let store = KeyStore::open(&args.state_dir)?;
            if store.load()?.is_none() {
                return Err(AgentError::NoKey { dir: args.state_dir.clone() });
            }
            store.stage_rotation()?;
            let key = store.load()?.ok_or_else(|| AgentError::KeyFileMissing { path: store.key_path() })?;
            (key, false, store)
        }
    };
    let public = record.key.public_key();
    let io = |source| AgentError::Io { what: "write to stdout".into(), source };
    let mut out = std::io::stdout().lock();
    writeln!(out, "public-key:  {public}").map_err(io)?;
    writeln!(out, "fingerprint: {}", public.fingerprint()).map_err(io)?;
    writeln!(out, "epoch:       {}", record.epoch).map_err(io)?;
    writeln!(
        out,
        "key-created: {}",
        record.annotations().to_annotations()[meshcrypt_keyexchange::annotations::KEY_CREATED]
    )
    .map_err(io)?;
    writeln!(out, "created:     {}", if created { "now" } else { "earlier" }).map_err(io)?;
    if let Some(pending) = store.pending()? {
        // The agent publishes it, then puts it in use: peers learn a key before it is used.
        let public = pending.key.public_key();
        writeln!(out, "pending:     {public} (epoch {}, {})", pending.epoch, public.fingerprint())
            .map_err(io)?;
    }
    Ok(())
}
