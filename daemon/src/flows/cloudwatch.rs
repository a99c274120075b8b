//! Flow records straight to CloudWatch Logs (`--flow-log cloudwatch-logs:GROUP`): one log stream
//! per node in GROUP, created when it is missing (the group must exist). Lines go in PutLogEvents
//! batches within the API's limits ("PutLogEvents", Amazon CloudWatch Logs API Reference: at most
//! 10,000 events and 1,048,576 bytes a batch, each event counted as its UTF-8 length plus 26).

use std::ops::Range;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;

use crate::error::AgentError;

/// Events in one PutLogEvents call at most.
const MAX_EVENTS: usize = 10_000;
/// Bytes in one call at most, with [`EVENT_OVERHEAD`] per event.
const MAX_BYTES: usize = 1_048_576;
/// What each event adds to a batch's size.
const EVENT_OVERHEAD: usize = 26;

/// A log stream to write to.
#[derive(Debug)]
pub struct CloudWatch {
    client: aws_sdk_cloudwatchlogs::Client,
    group: String,
    stream: String,
}

impl CloudWatch {
    /// The stream `stream` (this node's name) of log group `group`.
    pub fn new(client: aws_sdk_cloudwatchlogs::Client, group: String, stream: String) -> Self {
        Self { client, group, stream }
    }

    /// The log group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Sends `lines` as events stamped `at_ms` (Unix milliseconds), creating the stream on the first
    /// `ResourceNotFoundException` and trying once more.
    pub async fn put(&self, lines: &[String], at_ms: i64) -> Result<(), AgentError> {
        for range in batches(lines) {
            let events: Vec<InputLogEvent> = lines[range]
                .iter()
                .filter_map(|l| InputLogEvent::builder().message(l).timestamp(at_ms).build().ok())
                .collect();
            let send = || {
                self.client
                    .put_log_events()
                    .log_group_name(&self.group)
                    .log_stream_name(&self.stream)
                    .set_log_events(Some(events.clone()))
                    .send()
            };
            match send().await {
                Ok(_) => {}
                Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                    tracing::info!(group = %self.group, stream = %self.stream, "creating the flow log stream");
                    self.client
                        .create_log_stream()
                        .log_group_name(&self.group)
                        .log_stream_name(&self.stream)
                        .send()
                        .await
                        .map_err(|e| logs_error("CreateLogStream", e))?;
                    send().await.map_err(|e| logs_error("PutLogEvents", e))?;
                }
                Err(e) => return Err(logs_error("PutLogEvents", e)),
            }
        }
        Ok(())
    }
}

/// `lines` cut into runs that each fit one PutLogEvents call (a line alone always makes a run).
pub fn batches(lines: &[String]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, line) in lines.iter().enumerate() {
        let size = line.len() + EVENT_OVERHEAD;
        if i > start && (i - start == MAX_EVENTS || bytes + size > MAX_BYTES) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < lines.len() {
        out.push(start..lines.len());
    }
    out
}

/// The error of CloudWatch Logs call `call`, with its code and message.
fn logs_error(call: &'static str, e: impl Into<aws_sdk_cloudwatchlogs::Error>) -> AgentError {
    let source: aws_sdk_cloudwatchlogs::Error = e.into();
    AgentError::CloudWatchLogs { call, detail: crate::aws::error_detail(&source), source: Box::new(source) }
}

#[cfg(test)]
mod tests {
    use aws_sdk_cloudwatchlogs::config::Credentials;
    use meshcrypt_registry::testing::{CREDENTIALS, MotoServer, REGION};

    use super::*;

    fn client(moto: &MotoServer) -> aws_sdk_cloudwatchlogs::Client {
        let credentials = Credentials::new(CREDENTIALS.0, CREDENTIALS.1, None, None, "test");
        aws_sdk_cloudwatchlogs::Client::new(&crate::aws::endpoint_config(
            Some(REGION),
            &moto.url,
            credentials,
        ))
    }

    /// Against moto's CloudWatch Logs: the node's stream is made on the first write, lines arrive
    /// in order and unchanged, and a missing group is an error naming the API's code.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn lines_reach_the_nodes_stream_which_is_made_on_first_write() {
        let moto = MotoServer::start();
        let client = client(&moto);
        let group = "/meshcrypt/lab/flows";
        client.create_log_group().log_group_name(group).send().await.unwrap();
        let stream = CloudWatch::new(client.clone(), group.into(), "node-0".into());
        let lines: Vec<String> = (0..3).map(|i| format!("{{\"kind\":\"flow\",\"n\":{i}}}")).collect();
        // CloudWatch Logs refuses events more than 2 hours ahead or 14 days behind: stamp them now.
        let now = jiff::Timestamp::now().as_millisecond();
        stream.put(&lines, now - 60_000).await.unwrap();
        stream.put(&lines[..1], now).await.unwrap();
        let got = client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name("node-0")
            .start_from_head(true)
            .send()
            .await
            .unwrap();
        let messages: Vec<&str> = got.events().iter().filter_map(|e| e.message()).collect();
        assert_eq!(messages, [&lines[0], &lines[1], &lines[2], &lines[0]]);
        assert_eq!(got.events()[3].timestamp(), Some(now));

        let missing = CloudWatch::new(client, "/no/such/group".into(), "node-0".into());
        let err = missing.put(&lines, now).await.expect_err("no group");
        assert!(err.to_string().contains("ResourceNotFoundException"), "{err}");
    }

    #[test]
    fn batches_table() {
        let lines = |n: usize, len: usize| vec!["x".repeat(len); n];
        let big = MAX_BYTES / 2;
        for (name, input, want) in [
            ("none", lines(0, 10), vec![]),
            ("a few", lines(3, 10), vec![(0, 3)]),
            ("10,000 events a call", lines(10_001, 10), vec![(0, 10_000), (10_000, 10_001)]),
            ("1 MiB a call, 26 bytes counted per event", lines(3, big - 26), vec![(0, 2), (2, 3)]),
            ("just over: a new call", lines(2, big - 25), vec![(0, 1), (1, 2)]),
            ("one line past the limit still goes, alone", lines(2, MAX_BYTES), vec![(0, 1), (1, 2)]),
        ] {
            let got: Vec<(usize, usize)> = batches(&input).into_iter().map(|r| (r.start, r.end)).collect();
            assert_eq!(got, want, "{name}");
        }
    }
}
