//! Logging and tracing for every kafka-backup process. Logs go to stderr; spans are exported
//! over OTLP/gRPC only when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) variable is set, through a batch exporter so export
//! never waits on the data path. Trace context travels between processes as a W3C
//! `traceparent` string: in gRPC metadata on every call, and inside each lease so a worker's
//! task spans join the trace of the plan they belong to.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Keeps the exporter alive; call [`Telemetry::shutdown`] before exit to flush spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("warning: could not flush traces: {e}");
            }
        }
    }
}

fn otlp_configured() -> bool {
    let set = |v: &str| std::env::var(v).is_ok_and(|s| !s.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs the global subscriber. `service` names the process in traces
/// (e.g. `kafka-backup-worker`); `default_filter` applies when `RUST_LOG` is unset.
/// Must be called inside a tokio runtime (the batch exporter runs on it).
pub fn init(service: &str, default_filter: &str) -> Telemetry {
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let provider = if otlp_configured() {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        Resource::builder()
                            .with_service_name(service.to_string())
                            .build(),
                    )
                    .build(),
            ),
            Err(e) => {
                eprintln!("warning: OTLP exporter not started: {e}");
                None
            }
        }
    } else {
        None
    };
    // Span filtering for export is independent of the log level: spans of our crates are
    // always recorded when exporting, even if only warnings are logged. That needs a filter
    // per layer, and with it `AskEveryTime`; without export the log filter is the
    // subscriber's own.
    match &provider {
        Some(p) => {
            let otel_filter = EnvFilter::new("warn,kafka_backup=info,kafka_backup_coordinator=info,kafka_backup_worker=info,kafka_backup_common=info");
            let layer = tracing_opentelemetry::layer()
                .with_tracer(p.tracer("kafka-backup"))
                .with_filter(otel_filter);
            let _ = tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_filter(filter),
                )
                .with(layer)
                .with(AskEveryTime)
                .try_init();
        }
        None => {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
                .try_init();
        }
    }
    Telemetry { provider }
}

use tracing_subscriber::Layer;

/// Makes every callsite's interest "sometimes", so that per-layer filters are asked about
/// every event. With a cached "always", `tracing` skips `enabled()`, and a per-layer filter
/// goes by the decision its thread-local state holds from the previous check on that thread
/// — often a `log_enabled!` of rdkafka's through tracing-log, for a target the filter
/// disables — and drops the event: "backup started" and "segments stored uncompressed"
/// went missing whenever the filter held a target directive such as the default
/// `librdkafka=error` (tokio-rs/tracing#2519; a fix is proposed upstream in #3572).
struct AskEveryTime;

impl<S: tracing::Subscriber> Layer<S> for AskEveryTime {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
}

/// The W3C traceparent of a span ("" when tracing is off or the span is disabled).
pub fn traceparent_of(span: &tracing::Span) -> String {
    let cx = span.context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent").unwrap_or_default()
}

/// The traceparent of the current span.
pub fn current_traceparent() -> String {
    traceparent_of(&tracing::Span::current())
}

/// A context whose remote parent is `traceparent` (empty or malformed: no parent).
pub fn context_from_traceparent(traceparent: &str) -> Context {
    let mut carrier = HashMap::new();
    if !traceparent.is_empty() {
        carrier.insert("traceparent".to_string(), traceparent.to_string());
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// Makes `span` a child of the remote `traceparent`, when there is one.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    if !traceparent.is_empty() {
        let _ = span.set_parent(context_from_traceparent(traceparent));
    }
}
