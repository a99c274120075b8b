//! `meshcrypt keys`: create or inspect the node key; only the public half is ever printed.

use std::io::Write as _;

use anyhow::Context as _;
use meshcrypt_keyexchange::KeyStore;

use crate::cli::KeysCommand;

pub fn run(command: KeysCommand) -> anyhow::Result<()> {
    let (dir, create) = match command {
        KeysCommand::Init(args) => (args.state_dir, true),
        KeysCommand::Show(args) => (args.state_dir, false),
    };
    let store = KeyStore::open(&dir)?;
    let (key, created) = if create {
        store.load_or_create()?
    } else {
        let key = store
            .load()?
            .with_context(|| format!("no key in {}: run `meshcrypt keys init`", dir.display()))?;
        (key, false)
    };
    let public = key.public_key();
    let mut out = std::io::stdout().lock();
    writeln!(out, "public-key:  {public}")?;
    writeln!(out, "fingerprint: {}", public.fingerprint())?;
    writeln!(out, "key-file:    {}", store.key_path().display())?;
    writeln!(out, "created:     {}", if created { "now" } else { "earlier" })?;
    Ok(())
}
