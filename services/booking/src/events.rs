//! What other services' events do here: a deleted customer's current and future bookings
//! are cancelled (the customer-deletion saga), and the statuses of rooms are kept in
//! booking's own projection, so a room in maintenance or retired is refused without a
//! call to the room service.

use crate::{error::BookingError, model::today_utc, store::Store};
use futures::future::BoxFuture;
use hotel_common::page;
use hotel_events::{CloudEvent, HandleError, Handler};
use serde::Deserialize;
use sqlx::AnyConnection;
use uuid::Uuid;

fn handle_error(e: BookingError) -> HandleError {
    match e {
        BookingError::Database(e) => HandleError::Database(e),
        other => HandleError::Reject(other.to_string()),
    }
}

/// `hotel.customer.deleted`: cancels the customer's bookings that are not over, with
/// `cancel_reason: customer_deleted`, each publishing `hotel.booking.cancelled`.
#[derive(Debug, Clone)]
pub struct CustomerDeleted {
    /// The bookings.
    pub store: Store,
}

#[derive(Debug, Deserialize)]
struct CustomerData {
    id: Uuid,
}

impl Handler for CustomerDeleted {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        event: &'a CloudEvent,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            event.expect_type(hotel_events::CUSTOMER_DELETED)?;
            let customer: CustomerData = event.data_as()?;
            let today = crate::model::format_date(today_utc());
            let n = self
                .store
                .cancel_for_customer(conn, customer.id, &today, page::now_micros())
                .await
                .map_err(handle_error)?;
            tracing::info!(customer.id = %customer.id, cancelled = n, "bookings of a deleted customer cancelled");
            Ok(())
        })
    }
}

/// `hotel.room.updated`: records the room's status in booking's projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoomUpdated;

#[derive(Debug, Deserialize)]
struct RoomData {
    room: RoomState,
}

#[derive(Debug, Deserialize)]
struct RoomState {
    id: Uuid,
    status: crate::model::RoomStatus,
}

impl Handler for RoomUpdated {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        event: &'a CloudEvent,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            event.expect_type(hotel_events::ROOM_UPDATED)?;
            let room: RoomData = event.data_as()?;
            let status = serde_json::to_value(room.room.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            // The event's time orders the updates of one room: on a broker, replicas
            // compete and redeliver, so an older update may arrive after a newer one.
            let at = event.time_micros().unwrap_or_else(page::now_micros);
            Store::set_room_status(conn, room.room.id, &status, at).await?;
            Ok(())
        })
    }
}
