//! `hotel`: one binary for every role. It only parses the command line and calls the
//! role's library.

use clap::{Parser, Subcommand, ValueEnum};
use hotel_common::process::{BoxError, ProcessArgs};

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
}

#[derive(Clone, Copy, ValueEnum)]
enum ServiceKind {
    Customer,
    Room,
    Booking,
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
            Command::Gateway(args) => hotel_gateway::run(args).await.map(|()| 0u8.into()),
            Command::Service { which, args } => match which {
                ServiceKind::Customer => hotel_customer::run(args).await,
                ServiceKind::Room => hotel_room::run(args).await,
                ServiceKind::Booking => hotel_booking::run(args).await,
            }
            .map(|()| 0u8.into()),
            Command::Cluster(cmd) => hotel_cluster::run(cmd).await,
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
