//! Everything the filter asks of its host, behind one small trait. The glue
//! (`filter`) implements it once over proxy-wasm; host tests implement it in
//! memory, with a clock they set and shared data several "VMs" can share.

use std::time::Duration;

use crate::cache::SharedData;
use crate::introspection::{IssuerError, IssuerResponse};
use crate::metrics::{Counter, IssuerCounter};
use crate::policy::IssuerId;
use crate::record::Field;
use crate::response::Reply;

pub trait Host: SharedData {
    /// Unix time in milliseconds; `None` when the clock is unusable.
    fn now_ms(&self) -> Option<u64>;

    /// Unix time in microseconds, to time work inside the VM (not to decide).
    fn now_us(&self) -> Option<u64>;

    /// Starts an HTTP call through an Envoy cluster: its id, or `None` when it
    /// could not be dispatched (an unknown cluster, say).
    fn dispatch(&self, cluster: &str, headers: &[(&str, &str)], body: &[u8], timeout: Duration) -> Option<u32>;

    /// A header of the call response being delivered.
    fn call_response_header(&self, name: &str) -> Option<Vec<u8>>;

    /// The first `size` bytes of the body of the call response being delivered.
    fn call_response_body(&self, size: usize) -> Vec<u8>;

    /// Calls `on_tick` every `period` from now on; zero stops it.
    fn set_tick(&self, period: Duration);

    /// Makes the paused request `context_id` the current one; false if it is gone.
    fn act_as(&self, context_id: u32) -> bool;

    /// Sets a header of the current request, replacing every copy; `None` removes them.
    fn set_request_header(&self, name: &str, value: Option<&str>);

    /// Answers the current request with a local reply.
    fn reply(&self, reply: &Reply);

    /// Lets the current request, paused until now, go on upstream.
    fn resume(&self);

    /// Leaves a field of the current request's outcome for the access log.
    fn record(&self, field: Field, value: &str);

    fn count(&self, counter: Counter) {
        self.count_by(counter, 1);
    }

    fn count_by(&self, counter: Counter, amount: u64);

    fn count_issuer(&self, issuer: IssuerId, counter: IssuerCounter);

    /// Hands counts kept back to the host (see `filter`: Envoy gets them in
    /// batches, on the root's tick); true when there were some.
    fn flush_counters(&self) -> bool {
        false
    }
}

/// An HTTP call's answer, as the host hands it to the callback that made the call.
pub struct CallAnswer {
    status: Option<u16>,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl CallAnswer {
    /// Reads the answer being delivered: `num_headers` and `body_size` as the
    /// callback got them, refusing a body over `max_body` bytes unread.
    pub fn read(host: &impl Host, num_headers: usize, body_size: usize, max_body: usize) -> Result<Self, IssuerError> {
        // A call reset after its headers arrived (a truncated body) comes with
        // no header map at all.
        if num_headers == 0 {
            return Err(IssuerError::NoStatus);
        }
        if body_size > max_body {
            return Err(IssuerError::TooLarge);
        }
        let header = |name| host.call_response_header(name).and_then(|v| String::from_utf8(v).ok());
        let status = header(":status").and_then(|s| s.parse::<u16>().ok());
        let body = if body_size == 0 { Vec::new() } else { host.call_response_body(body_size) };
        Ok(CallAnswer { status, content_type: header("content-type"), body })
    }

    pub fn response(&self) -> IssuerResponse<'_> {
        IssuerResponse { status: self.status, content_type: self.content_type.as_deref(), body: &self.body }
    }
}
