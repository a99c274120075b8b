//! `meshcrypt keys`: create or inspect the node key; only the public half is ever printed.

use std::io::Write as _;

use meshcrypt_keyexchange::KeyStore;

use crate::cli::KeysCommand;
use crate::error::AgentError;

pub fn run(command: KeysCommand) -> Result<(), AgentError> {
    let (record, created) = match command {
        KeysCommand::Init(args) => KeyStore::open(&args.state_dir)?.load_or_create()?,
        KeysCommand::Show(args) => {
            let key = KeyStore::open(&args.state_dir)?.load()?.ok_or_else(|| {
                AgentError::Config(format!(
                    "no key in {}: run `meshcrypt keys init`",
                    args.state_dir.display()
                ))
            })?;
            (key, false)
        }
        KeysCommand::Rotate(args) => (KeyStore::open(&args.state_dir)?.rotate()?, true),
    };
    let public = record.key.public_key();
    let io = |source| AgentError::Io { what: "write to stdout".into(), source };
    let mut out = std::io::stdout().lock();
    writeln!(out, "public-key:  {public}").map_err(io)?;
    writeln!(out, "fingerprint: {}", public.fingerprint()).map_err(io)?;
    writeln!(out, "epoch:       {}", record.epoch).map_err(io)?;
    writeln!(out, "key-created: {}", record.annotations().to_annotations()["meshcrypt.dev/key-created"])
        .map_err(io)?;
    writeln!(out, "created:     {}", if created { "now" } else { "earlier" }).map_err(io)?;
    Ok(())
}
