//! `hotel`: one binary for every role. It only parses the command line and calls the
//! role's library.

use clap::{Parser, Subcommand, ValueEnum};
use hotel_common::process::{BoxError, ProcessArgs};

mod probe;

/// mimalloc, not glibc's malloc: the gateway makes about 40 allocations per proxied
/// request, mostly freed within it, and under load glibc's per-size thread caches (7
/// blocks) overflow into its shared bins; mimalloc's free lists are per page and its
/// fast path a few instructions. Measured with `bench/instructions.sh`: 92.5k -> 83.5k
/// instructions per proxied request; throughput and memory in bench/README.md. Built
/// without its transparent-huge-page advice (`no_thp`, see the workspace manifest): with
/// it, the gateway's peak RSS under load was 32.6 MB, without it 24.6 MB, at the same
/// throughput. Called through its unaligned entry points where they suffice (see
/// `hotel_alloc`).
#[global_allocator]
static ALLOCATOR: hotel_alloc::Allocator = hotel_alloc::Allocator;

#[derive(Parser)]
#[command(name = "hotel", version, about = "A resilient hotel-booking cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service registry.
    Registry(ProcessArgs),
    /// Run the gateway.
    Gateway(hotel_gateway::GatewayArgs),
    /// Run one domain service.
    Service {
        /// Which service.
        #[arg(value_enum)]
        which: ServiceKind,
        #[command(flatten)]
        args: ProcessArgs,
    },
    #[command(flatten)]
    Cluster(hotel_cluster::ClusterCommand),
    /// GET one URL and exit 0 on a 2xx answer (container healthchecks: the image has no
    /// shell or curl): `hotel probe http://127.0.0.1:7000/readyz`.
    Probe(probe::ProbeArgs),
    /// Issue the certificates for mutual TLS between the components outside `hotel up`
    /// (compose, Kubernetes): a CA in DIR (made once, kept after) and, for every role
    /// (registry, gateway, customer, room, booking, and control for operators), a fresh
    /// certificate naming it in DIR/internal/. Prints each role's `[internal_tls]` env.
    Certs(CertsArgs),
}

#[derive(clap::Args)]
struct CertsArgs {
    /// Directory of the CA (`ca.pem`, `ca-key.pem`) and the certificates.
    #[arg(long, value_name = "DIR")]
    out: std::path::PathBuf,
}

fn certs(args: &CertsArgs) -> Result<std::process::ExitCode, BoxError> {
    let files = hotel_common::tls::local_ca::ensure_roles(
        &args.out,
        &hotel_common::tls::internal::IDENTITIES,
    )?;
    for (role, f) in &files {
        if role == hotel_common::tls::internal::CONTROL_ROLE {
            println!(
                "# control (operators' tools): --cacert {} --cert {} --key {}",
                f.ca.display(),
                f.cert.display(),
                f.key.display()
            );
            continue;
        }
        let p = format!("HOTEL_{}__INTERNAL_TLS__", role.to_ascii_uppercase());
        println!("# {role}");
        println!("{p}ENABLED=true");
        println!("{p}CA={}", f.ca.display());
        println!("{p}CERT={}", f.cert.display());
        println!("{p}KEY={}", f.key.display());
    }
    Ok(0u8.into())
}

#[derive(Clone, Copy, ValueEnum)]
enum ServiceKind {
    Customer,
    Room,
    Booking,
}

/// The OpenAPI documents the services serve at `/openapi.json`, for the gateway's merged
/// `/api/openapi.json`: built from the same code the instances run, so the gateway needs
/// no running instance to document them (see `hotel_gateway::docs`).
fn api_docs() -> Result<hotel_gateway::docs::ApiDocs, BoxError> {
    Ok(hotel_gateway::docs::ApiDocs::new()
        .with(
            hotel_customer::ROLE,
            hotel_common::openapi::to_json(&hotel_customer::openapi()),
        )
        .with(
            hotel_room::ROLE,
            hotel_common::openapi::to_json(&hotel_room::openapi()),
        )
        .with(
            hotel_booking::ROLE,
            hotel_common::openapi::to_json(&hotel_booking::openapi()),
        ))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    hotel_common::process::follow_supervisor();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hotel: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: Result<std::process::ExitCode, BoxError> = rt.block_on(async move {
        match cli.command {
            Command::Registry(args) => hotel_registry::run(args).await.map(|()| 0u8.into()),
            Command::Gateway(mut args) => {
                args.api_docs = api_docs()?;
                hotel_gateway::run(args).await.map(|()| 0u8.into())
            }
            Command::Service { which, args } => match which {
                ServiceKind::Customer => hotel_customer::run(args).await,
                ServiceKind::Room => hotel_room::run(args).await,
                ServiceKind::Booking => hotel_booking::run(args).await,
            }
            .map(|()| 0u8.into()),
            Command::Cluster(cmd) => hotel_cluster::run(cmd).await,
            Command::Certs(args) => certs(&args),
            Command::Probe(args) => Ok(match probe::run(&args).await {
                Ok(_) => 0u8.into(),
                Err(why) => {
                    eprintln!("hotel probe: {}: {why}", args.url);
                    1u8.into()
                }
            }),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hotel: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use hotel_gateway::{Config, Settings};

    #[test]
    fn the_gateway_documents_every_routed_service_under_its_public_paths() {
        let config = Config::try_from(Settings::default()).unwrap();
        let docs = super::api_docs().unwrap();
        let merged = docs.merged(&config.routes, "test");
        assert!(merged.missing.is_empty(), "{:?}", merged.missing);
        let paths = merged.document["paths"].as_object().unwrap();
        for p in [
            "/api/customers",
            "/api/customers/{id}",
            "/api/rooms",
            "/api/rooms/{id}",
            "/api/bookings",
            "/api/bookings/{id}",
            "/api/bookings/{id}/cancel",
            "/api/availability",
        ] {
            assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys());
        }
        // Only what the gateway routes: no health or per-instance document paths.
        assert!(
            paths.keys().all(|p| p.starts_with("/api/")),
            "{:?}",
            paths.keys()
        );
        // Every `$ref` names a component the document has.
        let text = merged.document.to_string();
        for r in text.split("\"$ref\":\"#/components/").skip(1) {
            let r = &r[..r.find('"').unwrap()];
            let (kind, name) = r.split_once('/').unwrap();
            assert!(
                merged.document["components"][kind].get(name).is_some(),
                "dangling $ref {r}"
            );
        }
        // Deterministic: the same inputs give the same bytes.
        let again = docs.merged(&config.routes, "test");
        assert_eq!(text, again.document.to_string());
    }
}
