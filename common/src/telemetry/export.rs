//! OTLP export switched on by the standard OpenTelemetry environment variables.
//!
//! Read here, once, at start-up: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (export is on only when one is set),
//! `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or
//! `http/protobuf`), `OTEL_SDK_DISABLED` and `OTEL_TRACES_EXPORTER=none` (both switch it
//! off). The SDK itself reads `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and the exporter timeouts and headers.

use super::Identity;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};

/// Where and how spans are sent, as read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    /// The endpoint as the user gave it (the signal-specific one wins).
    pub endpoint: String,
    /// Whether `endpoint` came from `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
    /// from the generic variable (OTLP/HTTP appends `/v1/traces`).
    pub signal_specific: bool,
    /// The wire protocol.
    pub protocol: ExportProtocol,
}

/// The OTLP transports this build speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportProtocol {
    /// OTLP over gRPC (Jaeger: port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (Jaeger: port 4318).
    HttpProtobuf,
}

impl ExportSettings {
    /// Reads the settings through `var` (the process environment in production, a map in
    /// tests, so tests never mutate the environment). `None` means: export nothing.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let set = |k: &str| {
            var(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let (endpoint, signal_specific) = match (
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            set("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(e), _) => (e, true),
            (None, Some(e)) => (e, false),
            (None, None) => return Ok(None),
        };
        let protocol = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            Some(p) if p.eq_ignore_ascii_case("grpc") => ExportProtocol::Grpc,
            Some(p) if p.eq_ignore_ascii_case("http/protobuf") => ExportProtocol::HttpProtobuf,
            Some(p) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={p:?} is not supported; use grpc or http/protobuf"
                ));
            }
            // The specification's default is http/protobuf, but an endpoint on 4317 is
            // the gRPC port of every collector and of Jaeger: sending HTTP there would
            // fail silently, so follow the port.
            None if port_of(&endpoint) == Some(4317) => ExportProtocol::Grpc,
            None => ExportProtocol::HttpProtobuf,
        };
        Ok(Some(ExportSettings {
            endpoint,
            signal_specific,
            protocol,
        }))
    }

    /// The URL spans are posted to (what the exporter will use).
    pub fn traces_url(&self) -> String {
        match self.protocol {
            ExportProtocol::Grpc => self.endpoint.clone(),
            ExportProtocol::HttpProtobuf if self.signal_specific => self.endpoint.clone(),
            ExportProtocol::HttpProtobuf => {
                format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
            }
        }
    }
}

fn port_of(endpoint: &str) -> Option<u16> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

/// The resource every span of this process carries. `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES` are honoured by the SDK's detectors; the role and instance
/// name are set here so that a launcher does not have to.
pub fn resource(identity: &Identity) -> Resource {
    let mut builder = Resource::builder().with_attributes([
        KeyValue::new("service.namespace", "hotel"),
        KeyValue::new("service.instance.id", identity.instance.clone()),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ]);
    // The specification lets OTEL_SERVICE_NAME override the code's choice.
    if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
        builder = builder.with_service_name(identity.role.clone());
    }
    builder.build()
}

/// Builds the tracer provider with a batch exporter. Must run inside a tokio runtime
/// (the gRPC channel's worker is spawned on it).
pub fn provider(
    settings: &ExportSettings,
    identity: &Identity,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = match settings.protocol {
        ExportProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.traces_url())
            .build()?,
        ExportProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            // An endpoint given in code is used as is, so pass the full URL.
            .with_endpoint(settings.traces_url())
            .build()?,
    };
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(identity))
        .build())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<Option<ExportSettings>, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ExportSettings::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(read(&[("OTEL_TRACES_SAMPLER", "always_on")]), Ok(None));
        assert_eq!(read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]), Ok(None));
    }

    #[test]
    fn sdk_disabled_or_exporter_none_switches_export_off() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(read(&[ep, ("OTEL_SDK_DISABLED", "true")]), Ok(None));
        assert_eq!(read(&[ep, ("OTEL_TRACES_EXPORTER", "none")]), Ok(None));
    }

    #[test]
    fn generic_http_endpoint_gets_v1_traces_appended() {
        let s = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(s.protocol, ExportProtocol::HttpProtobuf);
        assert_eq!(s.traces_url(), "http://127.0.0.1:4318/v1/traces");
    }

    #[test]
    fn signal_specific_endpoint_wins_and_is_used_as_is() {
        let s = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:4318/custom",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.traces_url(), "http://127.0.0.1:4318/custom");
    }

    #[test]
    fn port_4317_without_a_protocol_means_grpc() {
        let s = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")])
            .unwrap()
            .unwrap();
        assert_eq!(s.protocol, ExportProtocol::Grpc);
        assert_eq!(s.traces_url(), "http://127.0.0.1:4317");
    }

    #[test]
    fn explicit_protocol_overrides_the_port_guess() {
        let s = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.protocol, ExportProtocol::HttpProtobuf);
        let s = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9999"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.protocol, ExportProtocol::Grpc);
    }

    #[test]
    fn unsupported_protocol_is_an_error_naming_the_variable() {
        let err = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ])
        .unwrap_err();
        assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{err}");
    }
}
