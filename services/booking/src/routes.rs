//! The HTTP handlers of the booking service and the OpenAPI document describing them.

use crate::{
    directory::Directory,
    error::BookingError,
    idempotency::{self, Reservation, StoredResponse},
    model::{
        Availability, AvailabilityQuery, Booking, BookingPage, BookingStatus, Customer, ListQuery,
        NewBooking, Room, RoomStatus, Stay, check_guests, today_utc,
    },
    store::{Draft, Store},
};
use axum::{
    Router,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use hotel_common::{
    Problem,
    conditional::{self, CacheControl, IfMatch},
    extract::{Json, Path, Query},
    page::{self, Keyset},
};
use std::{sync::Arc, time::Duration};
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The bookings database.
    pub store: Store,
    /// Customer and room lookups.
    pub directory: Arc<dyn Directory>,
    /// How long idempotency keys are honoured.
    pub idempotency_retention: Duration,
    /// How long a duplicate waits for the in-flight first request before a 409.
    pub idempotency_wait: Duration,
    /// How many days after today a stay may begin.
    pub max_days_ahead: u32,
}

/// The booking routes (without the shared layers) and the OpenAPI document describing
/// exactly those routes.
pub fn api(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut doc) = declared().with_state(state).split_for_parts();
    link(&mut doc);
    (router, doc)
}

/// The OpenAPI document served at `/openapi.json`, built without a database: the booking
/// routes plus the routes every service has.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = declared().into_openapi();
    link(&mut doc);
    hotel_common::openapi::document_shared_routes(&mut doc);
    doc
}

/// Links from a create to the read and the cancellation of the booking it made, and the
/// conditional request rules (validators, 304, `If-Match` on the cancellation, 412).
fn link(doc: &mut utoipa::openapi::OpenApi) {
    hotel_common::openapi::link_created(
        doc,
        "/bookings",
        &["/bookings/{id}", "/bookings/{id}/cancel"],
    );
    conditional::document(
        doc,
        &["/bookings", "/bookings/{id}", "/bookings/{id}/cancel"],
        &["/bookings/{id}/cancel"],
        conditional::PERSONAL,
    );
}

/// Bookings are personal data: never stored by a shared cache (nor configurable).
fn cache() -> CacheControl {
    CacheControl::personal()
}

/// Every booking route, each declared once for both the router and the document, so the
/// two cannot drift apart.
fn declared() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create_booking, list_bookings))
        .routes(routes!(get_booking))
        .routes(routes!(cancel_booking))
        .routes(routes!(availability))
}

/// Creates a booking; with `Idempotency-Key`, at most once per key.
#[utoipa::path(
    post,
    path = "/bookings",
    tag = "bookings",
    request_body = NewBooking,
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
         pattern = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$",
         description = "1 to 255 printable ASCII characters, not starting or ending with a space; a repeat with the same body replays the first response"),
        ("X-Forwarded-Prefix" = Option<String>, Header,
         description = "Path prefix a proxy strips (such as `/api`), put back in front of `Location`"),
    ),
    responses(
        (status = 201, description = "Booked (or replayed, with `Idempotent-Replayed: true`)", body = Booking),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The room is booked on some of those nights, or the key's first request is still running", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not sent as application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (named in `errors`), or the key was used with another body", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "Customer or room service answered something unexpected", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Customer or room service unavailable; retry after `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_booking(
    State(app): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<NewBooking>,
) -> Response {
    let key = match idempotency::key_from(&headers) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let prefix = hotel_common::http::forwarded_prefix(&headers);
    let Some(key) = key else {
        return match create(&app, &req, &prefix, None).await {
            Ok(stored) => stored.into_response(false),
            Err(e) => e.into_response(),
        };
    };
    let hash = idempotency::request_hash(&req);
    match reserve_or_wait(&app, &key, &hash).await {
        Err(e) => e.into_response(),
        Ok(Reservation::Replay(stored)) => stored.into_response(true),
        Ok(Reservation::Reserved(owner)) => {
            tracing::debug!(%owner, "idempotency key reserved");
            // Finish the work and settle the key even if the client hangs up (axum drops
            // the handler future then), or the key would stay in flight until its lease
            // runs out.
            let ctx = hotel_common::context::current();
            let work =
                run_reserved(app, req, prefix, key, owner).instrument(tracing::Span::current());
            let task = match ctx {
                Some(ctx) => tokio::spawn(hotel_common::context::scope(ctx, work)),
                None => tokio::spawn(work),
            };
            match task.await {
                Ok(stored) => stored.into_response(false),
                Err(e) => BookingError::Internal(format!("booking task: {e}")).into_response(),
            }
        }
    }
}

/// Reserves `key`; while another request holds it, waits (up to `idempotency_wait`) for
/// that one to settle, so a duplicate gets the first answer instead of a 409.
async fn reserve_or_wait(
    app: &AppState,
    key: &str,
    hash: &str,
) -> Result<Reservation, BookingError> {
    let retention_ms = i64::try_from(app.idempotency_retention.as_millis()).unwrap_or(i64::MAX);
    let deadline = tokio::time::Instant::now() + app.idempotency_wait;
    loop {
        let pool = app.store.pool();
        match idempotency::reserve(pool, key, hash, idempotency::now_ms(), retention_ms).await {
            Err(BookingError::IdempotencyKeyInFlight) if tokio::time::Instant::now() < deadline => {
                idempotency::wait_for_change(pool, key, deadline).await?;
            }
            other => return other,
        }
    }
}

/// Does the work of a request whose key `owner` reserved, renewing the reservation
/// meanwhile, and settles the key: a 201 is stored with the booking, another 4xx after
/// it, a 5xx releases the key.
async fn run_reserved(
    app: AppState,
    req: NewBooking,
    prefix: String,
    key: String,
    owner: String,
) -> StoredResponse {
    let renewal = {
        let (pool, key, owner) = (app.store.pool().clone(), key.clone(), owner.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(idempotency::RENEW_EVERY).await;
                match idempotency::renew(&pool, &key, &owner, idempotency::now_ms()).await {
                    Ok(true) => {}
                    // Settled, or taken over: nothing left to renew.
                    Ok(false) => break,
                    Err(e) => tracing::warn!(error = %e, "could not renew an idempotency key"),
                }
            }
        })
    };
    let stored = match create(&app, &req, &prefix, Some((&key, &owner))).await {
        Ok(stored) => stored,
        Err(e) => {
            let stored = StoredResponse::problem(&e.to_problem());
            let settled = if stored.status >= 500 {
                idempotency::release(app.store.pool(), &key, &owner).await
            } else {
                idempotency::complete(app.store.pool(), &key, &owner, &stored)
                    .await
                    .map(|_| ())
            };
            if let Err(e) = settled {
                tracing::error!(error = %e, "could not settle an idempotency key");
            }
            stored
        }
    };
    renewal.abort();
    stored
}

/// Validates, asks customer and room, and books. With a key (and its reservation's
/// owner), the 201 is stored with the key in the booking's own transaction.
async fn create(
    app: &AppState,
    req: &NewBooking,
    location_prefix: &str,
    key: Option<(&str, &str)>,
) -> Result<StoredResponse, BookingError> {
    let guests = req.guests.get();
    let stay = Stay::parse(
        &req.check_in,
        &req.check_out,
        today_utc(),
        app.max_days_ahead,
    )?;
    // Booking's own projection of room statuses (from `hotel.room.updated`) refuses a
    // room out of service without asking the room service.
    match app.store.room_status(req.room_id).await?.as_deref() {
        Some("maintenance") => {
            return Err(BookingError::invalid(
                "room_id",
                "the room is under maintenance",
            ));
        }
        Some("retired") => return Err(BookingError::invalid("room_id", "the room is retired")),
        _ => {}
    }
    // Both lookups at once: a booking costs one peer round trip, not two.
    let (customer, room) = tokio::join!(
        app.directory.customer(req.customer_id),
        app.directory.room(req.room_id)
    );
    let _customer: Customer =
        customer?.ok_or_else(|| BookingError::invalid("customer_id", "no customer has this id"))?;
    let room: Room =
        room?.ok_or_else(|| BookingError::invalid("room_id", "no room has this id"))?;
    match room.status {
        RoomStatus::Available => {}
        RoomStatus::Maintenance => {
            return Err(BookingError::invalid(
                "room_id",
                "the room is under maintenance",
            ));
        }
        RoomStatus::Retired => {
            return Err(BookingError::invalid("room_id", "the room is retired"));
        }
    }
    if guests > room.capacity {
        return Err(BookingError::invalid(
            "guests",
            format!(
                "room {} holds at most {} guests",
                room.number, room.capacity
            ),
        ));
    }
    let total_cents = stay
        .nights()
        .checked_mul(room.nightly_rate_cents)
        .filter(|t| *t >= 0)
        .ok_or_else(|| BookingError::Internal(format!("room {} has an absurd rate", room.id)))?;
    let draft = Draft {
        id: Uuid::new_v4(),
        customer_id: req.customer_id,
        room_id: req.room_id,
        stay,
        guests,
        total_cents,
        created_at: page::now_micros(),
    };
    let stored = StoredResponse::created(
        format!("{location_prefix}/bookings/{}", draft.id),
        &draft.to_booking(),
    );
    let booking = app
        .store
        .insert_if_free(&draft, key.map(|(k, owner)| (k, owner, &stored)))
        .await?;
    tracing::info!(booking.id = %booking.id, room.id = %booking.room_id, "booked");
    Ok(stored)
}

/// One booking.
#[utoipa::path(
    get,
    path = "/bookings/{id}",
    tag = "bookings",
    params(("id" = Uuid, Path, description = "Booking id")),
    responses(
        (status = 200, description = "The booking", body = Booking),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_booking(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Result<Response, Problem> {
    let booking = app.store.get(id).await?;
    Ok(cache().answer(&headers, &booking.validators, booking.value))
}

/// A customer's or a room's bookings, oldest first.
#[utoipa::path(
    get,
    path = "/bookings",
    tag = "bookings",
    params(ListQuery),
    responses(
        (status = 200, description = "One page", body = BookingPage),
        (status = 400, description = "Neither customer_id nor room_id, a malformed id or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "limit out of 1..=100", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_bookings(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, Problem> {
    if q.customer_id.is_none() && q.room_id.is_none() {
        return Err(
            BookingError::bad_query("customer_id", "customer_id or room_id is required").into(),
        );
    }
    let limit = page::limit(q.limit)?;
    let after = page::after::<Keyset>(q.cursor.as_deref())?;
    let (page, tag) = app
        .store
        .list(q.customer_id, q.room_id, after, limit)
        .await?;
    let page = BookingPage {
        items: page.items,
        next_cursor: page.next_cursor,
    };
    Ok(cache().answer(&headers, &tag, page))
}

/// Cancels a booking and frees its nights (`cancel_reason: requested`), publishing
/// `hotel.booking.cancelled`; cancelling twice answers the cancelled booking.
#[utoipa::path(
    post,
    path = "/bookings/{id}/cancel",
    tag = "bookings",
    params(("id" = Uuid, Path, description = "Booking id")),
    responses(
        (status = 200, description = "The cancelled booking", body = Booking),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn cancel_booking(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Result<Response, Problem> {
    let condition = IfMatch::from_headers(&headers);
    let booking = app
        .store
        .cancel(id, page::now_micros(), condition.as_ref())
        .await?;
    debug_assert_eq!(booking.value.status, BookingStatus::Cancelled);
    Ok(cache().changed(
        axum::http::StatusCode::OK,
        &booking.validators,
        booking.value,
    ))
}

/// Rooms free for the nights asked and large enough for the guests.
#[utoipa::path(
    get,
    path = "/availability",
    tag = "availability",
    params(AvailabilityQuery),
    responses(
        (status = 200, description = "Available rooms", body = Availability),
        (status = 400, description = "A parameter is missing or not a number", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad dates or guests (named)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "Room service answered something unexpected", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Room service unavailable; retry after `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn availability(
    State(app): State<AppState>,
    Query(q): Query<AvailabilityQuery>,
) -> Result<Json<Availability>, Problem> {
    check_guests(q.guests)?;
    let stay = Stay::parse(&q.check_in, &q.check_out, today_utc(), app.max_days_ahead)?;
    // Ask the room service first: if it is down there is nothing to compute.
    let rooms = app
        .directory
        .rooms(q.guests)
        .await
        .map_err(BookingError::from)?;
    let booked = app.store.booked_rooms(&stay).await?;
    let items = rooms
        .into_iter()
        .filter(|r| r.status == RoomStatus::Available && r.capacity >= q.guests)
        .filter(|r| !booked.contains(&r.id))
        .collect();
    Ok(Json(Availability { items }))
}

/// The fixed part of the OpenAPI document; paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "hotel booking service", description = "Bookings and availability."),
    tags(
        (name = "bookings", description = "Book, read, list and cancel bookings"),
        (name = "availability", description = "Rooms free for some nights"),
    )
)]
pub struct ApiDoc;
