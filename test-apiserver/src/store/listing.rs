//! Listing (paged, with continue tokens pinned to the first page's resourceVersion) and starting
//! watches (snapshot or history replay, subscribed atomically with the live broadcast).

use std::sync::Arc;

use super::super::error::ApiServerError;
use super::super::resources::ResourceDef;
use super::super::selectors::Selectors;
use super::super::versions::{storage, to_view};
use super::{EventType, ListPage, Store, StoredEvent, WatchBegin, WatchStart, meta_str};

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    let raw = format!("{ns}/{name}");
    let hex: String = raw.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{rv}-{hex}")
}

fn decode_continue(token: &str) -> Result<(u64, String, String), ApiServerError> {
    let bad = || ApiServerError::BadRequest(format!("invalid continue token: {token:?}"));
    let (rv, hex) = token.split_once('-').ok_or_else(bad)?;
    let rv = rv.parse::<u64>().map_err(|_| bad())?;
    if hex.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16)).collect();
    let raw = String::from_utf8(bytes.map_err(|_| bad())?).map_err(|_| bad())?;
    let (ns, name) = raw.split_once('/').ok_or_else(bad)?;
    Ok((rv, ns.to_string(), name.to_string()))
}

impl Store {
    /// Lists objects of a resource, in one namespace or all (`None`), filtered by selectors (on the
    /// stored objects), in pages of `limit` (0: all) after the `continue` token.
    pub fn list(
        &self,
        res: &ResourceDef,
        ns: Option<&str>,
        selectors: &Selectors,
        limit: usize,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiServerError> {
        let inner = self.lock();
        let after = continue_token.filter(|t| !t.is_empty()).map(decode_continue).transpose()?;
        // Like a real server, every page reports the first page's resourceVersion, so a watch
        // started from it replays whatever changed while the client was paging.
        let list_rv = after.as_ref().map_or(inner.rv, |(rv, _, _)| *rv);
        if list_rv < inner.floor {
            return Err(ApiServerError::Expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
            ));
        }
        let mut items = Vec::new();
        let mut last: Option<(String, String)> = None;
        let mut remaining = 0usize;
        let stored_res = storage(res);
        for ((g, p, ons, oname), stored) in inner.objects.iter() {
            if *g != stored_res.group || *p != stored_res.plural {
                continue;
            }
            if let Some(ns) = ns
                && res.namespaced
                && ons != ns
            {
                continue;
            }
            if let Some((_, ans, aname)) = &after
                && (ons, oname) <= (ans, aname)
            {
                continue;
            }
            if !selectors.matches(&stored.object) {
                continue;
            }
            if limit > 0 && items.len() >= limit {
                remaining += 1;
                continue;
            }
            items.push(to_view(res, stored.object.clone()));
            last = Some((ons.clone(), oname.clone()));
        }
        let continue_token = match (remaining, last) {
            (r, Some((ns, name))) if r > 0 => Some(encode_continue(list_rv, &ns, &name)),
            _ => None,
        };
        Ok(ListPage { items, rv: list_rv, continue_token, remaining })
    }

    /// Starts a watch: atomically computes the events to send first (with the stored objects) and
    /// subscribes to live ones. `Err(floor)` when `After(rv)` is older than the retained history.
    pub fn begin_watch(
        &self,
        res: &ResourceDef,
        ns: Option<&str>,
        start: WatchStart,
    ) -> Result<WatchBegin, u64> {
        let res = &storage(res);
        let inner = self.lock();
        let live = self.tx.subscribe();
        let initial = match start {
            WatchStart::Snapshot => inner
                .objects
                .iter()
                .filter(|((g, p, ons, _), _)| {
                    *g == res.group && *p == res.plural && ns.is_none_or(|n| !res.namespaced || ons == n)
                })
                .map(|((_, _, ons, _), s)| {
                    Arc::new(StoredEvent {
                        rv: meta_str(&s.object, "resourceVersion")
                            .and_then(|r| r.parse().ok())
                            .unwrap_or(inner.rv),
                        resource: *res,
                        namespace: ons.clone(),
                        kind: EventType::Added,
                        object: s.object.clone(),
                        previous: None,
                    })
                })
                .collect(),
            WatchStart::After(rv) => {
                if rv < inner.floor {
                    return Err(inner.floor);
                }
                inner.history.iter().filter(|e| e.rv > rv).cloned().collect()
            }
        };
        Ok(WatchBegin { initial, rv: inner.rv, live })
    }
}
