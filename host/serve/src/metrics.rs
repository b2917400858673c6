//! Prometheus metrics at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `oip`, `mlflow`, `legion`.
    pub protocol: String,
    /// HTTP status code.
    pub code: u16,
}

/// Labels of a latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// `oip`, `mlflow`, `legion`.
    pub protocol: String,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Prediction requests by protocol and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Prediction latency by protocol.
    pub latency: Family<ProtocolLabels, Histogram>,
    /// Rows per `predict` call.
    pub batch_rows: Histogram,
    /// Requests waiting for a worker.
    pub queue_depth: Gauge,
    /// Workers with the model loaded.
    pub workers_ready: Gauge,
    /// Workers restarted after a crash.
    pub worker_restarts: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("legion");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<ProtocolLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let batch_rows = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let queue_depth = Gauge::default();
        let workers_ready = Gauge::default();
        let worker_restarts = Counter::default();
        registry.register(
            "requests",
            "Prediction requests by protocol and status code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Prediction latency in seconds",
            latency.clone(),
        );
        registry.register("batch_rows", "Rows per predict call", batch_rows.clone());
        registry.register(
            "queue_depth",
            "Requests waiting for a worker",
            queue_depth.clone(),
        );
        registry.register(
            "workers_ready",
            "Workers with the model loaded",
            workers_ready.clone(),
        );
        registry.register(
            "worker_restarts",
            "Workers restarted after a crash",
            worker_restarts.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            batch_rows,
            queue_depth,
            workers_ready,
            worker_restarts,
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
