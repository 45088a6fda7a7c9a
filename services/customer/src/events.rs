//! What the booking service's events do here: each customer's booking counts
//! (`GET /customers/{id}` shows them as `bookings`).

use crate::store;
use futures::future::BoxFuture;
use hotel_events::{CloudEvent, HandleError, Handler};
use serde::Deserialize;
use sqlx::AnyConnection;
use uuid::Uuid;

/// The part of a booking event's data this service reads.
#[derive(Debug, Deserialize)]
struct BookingData {
    customer_id: Uuid,
}

/// Counts `hotel.booking.created` as active and `hotel.booking.cancelled` as one active
/// less and one cancelled more.
#[derive(Debug, Clone, Copy, Default)]
pub struct BookingCounts;

impl Handler for BookingCounts {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        event: &'a CloudEvent,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let (active, cancelled) = match event.kind.as_str() {
                hotel_events::BOOKING_CREATED => (1, 0),
                hotel_events::BOOKING_CANCELLED => (-1, 1),
                _ => return Err(HandleError::unknown_type(event)),
            };
            let data: BookingData = event.data_as()?;
            store::count_bookings(conn, data.customer_id, active, cancelled).await?;
            Ok(())
        })
    }
}
