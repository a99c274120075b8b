//! `meshcrypt keys`: create or inspect the node key; only the public half is ever printed.

use std::io::Write as _;

use meshcrypt_keyexchange::KeyStore;

use crate::cli::KeysCommand;
use crate::error::AgentError;

pub fn run(command: KeysCommand) -> Result<(), AgentError> {
    let (dir, create) = match command {
        KeysCommand::Init(args) => (args.state_dir, true),
        KeysCommand::Show(args) => (args.state_dir, false),
    };
    let store = KeyStore::open(&dir)?;
    let (key, created) = if create {
        store.load_or_create()?
    } else {
        let key = store.load()?.ok_or_else(|| {
            AgentError::Config(format!("no key in {}: run `meshcrypt keys init`", dir.display()))
        })?;
        (key, false)
    };
    let public = key.public_key();
    let io = |source| AgentError::Io { what: "write to stdout".into(), source };
    let mut out = std::io::stdout().lock();
    writeln!(out, "public-key:  {public}").map_err(io)?;
    writeln!(out, "fingerprint: {}", public.fingerprint()).map_err(io)?;
    writeln!(out, "key-file:    {}", store.key_path().display()).map_err(io)?;
    writeln!(out, "created:     {}", if created { "now" } else { "earlier" }).map_err(io)?;
    Ok(())
}
