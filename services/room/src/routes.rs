//! HTTP handlers of `/rooms` and the OpenAPI document generated from them.
//!
//! Routes are declared once, through `utoipa_axum::routes!`, so the router and the
//! document are built from the same list and cannot drift apart.

use crate::{
    error::Error,
    model::{ListQuery, NewRoom, Room, RoomPatch, RoomStatus, valid_min_capacity},
    store::{self, Changes, Filter},
};
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use hotel_common::{
    Problem,
    conditional::{CacheControl, IfMatch},
    extract::{Json, Path, Query},
    page::{self, Keyset, Page},
};
use hotel_events::Producer;
use hotel_service::DatabaseState;
use sqlx::AnyPool;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

/// The OpenAPI document's fixed part; paths are added from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "hotel room service", description = "Rooms of the hotel."),
    tags((name = "rooms", description = "Create, find, change and retire rooms"))
)]
pub struct ApiDoc;

/// What every room handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The rooms database.
    pub pool: AnyPool,
    /// Writes this service's events (`hotel.room.updated`).
    pub producer: Producer,
    /// The `Cache-Control` of every read (`[cache]` in the settings).
    pub cache: CacheControl,
}

/// The room routes (without the shared layers) and the OpenAPI document describing
/// exactly those routes.
pub fn api(state: DatabaseState, cache: CacheControl) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut doc) = declared().split_for_parts();
    complete(&mut doc, &cache);
    let DatabaseState { pool, producer } = state;
    (
        router.with_state(AppState {
            pool,
            producer,
            cache,
        }),
        doc,
    )
}

/// The OpenAPI document of the room routes, built without a database, for `cache`.
pub fn document(cache: &CacheControl) -> utoipa::openapi::OpenApi {
    let mut doc = declared().into_openapi();
    complete(&mut doc, cache);
    doc
}

/// Links from a create to the read, update and retirement of the room it made, and the
/// conditional request rules (validators, 304, `If-Match`, 412).
fn complete(doc: &mut utoipa::openapi::OpenApi, cache: &CacheControl) {
    hotel_common::openapi::link_created(doc, "/rooms", &["/rooms/{id}"]);
    let cache = cache.value().to_str().unwrap_or_default();
    hotel_common::conditional::document(doc, &["/rooms", "/rooms/{id}"], &[], cache);
}

/// Every room route, each declared once for both the router and the document.
fn declared() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create_room, list_rooms))
        .routes(routes!(get_room, update_room, retire_room))
}

/// Create a room; it starts available.
#[utoipa::path(
    post, path = "/rooms", tag = "rooms",
    request_body = NewRoom,
    params(
        ("X-Forwarded-Prefix" = Option<String>, Header,
         description = "Path prefix a proxy strips (such as `/api`), put back in front of `Location`"),
    ),
    responses(
        (status = 201, description = "Created; `Location` names the room, `ETag` its first version", body = Room,
         headers(("Location" = String, description = "Path of the new room"),
                 ("ETag" = String, description = "Strong entity tag of the new room"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Number already in use", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not sent as application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing, unknown, of the wrong type or invalid (named in `errors`), or the body is not an object", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_room(
    State(app): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<NewRoom>,
) -> Result<Response, Error> {
    let room = store::insert(
        &app.pool,
        body.number.into_string(),
        body.kind,
        body.capacity.get(),
        body.nightly_rate_cents.get(),
    )
    .await?;
    let id = room.value.id;
    tracing::info!(room.id = %id, room.number = %room.value.number, "room created");
    let location = format!(
        "{}/rooms/{id}",
        hotel_common::http::forwarded_prefix(&headers)
    );
    let mut res = app
        .cache
        .changed(StatusCode::CREATED, &room.validators, room.value);
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// List rooms, oldest first, filtered by kind, size and status.
#[utoipa::path(
    get, path = "/rooms", tag = "rooms",
    params(ListQuery),
    responses(
        (status = 200, description = "One page", body = Page<Room>),
        (status = 400, description = "Unknown or malformed query parameter, or a cursor this list did not return", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "limit or min_capacity out of range", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_rooms(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, Error> {
    let limit = page::limit(q.limit)?;
    let after = page::after::<Keyset>(q.cursor.as_deref())?;
    let min_capacity = q.min_capacity.map(valid_min_capacity).transpose()?;
    let filter = Filter {
        kind: q.kind,
        min_capacity,
        status: q.status,
    };
    let (page, tag): (Page<Room>, _) = store::list(&app.pool, filter, after, limit).await?;
    Ok(app.cache.answer(&headers, &tag, page))
}

/// Get one room, whatever its status.
#[utoipa::path(
    get, path = "/rooms/{id}", tag = "rooms",
    params(("id" = Uuid, Path, description = "Room id")),
    responses(
        (status = 200, description = "The room", body = Room),
        (status = 400, description = "id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such room", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_room(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Result<Response, Error> {
    let room = store::get(&app.pool, id).await?;
    Ok(app.cache.answer(&headers, &room.validators, room.value))
}

/// Change a room; fields left out stay as they are. `status` may move between available
/// and maintenance; a retired room cannot change. Publishes `hotel.room.updated`.
#[utoipa::path(
    patch, path = "/rooms/{id}", tag = "rooms",
    params(("id" = Uuid, Path, description = "Room id")),
    request_body = RoomPatch,
    responses(
        (status = 200, description = "The changed room", body = Room),
        (status = 400, description = "id is not a UUID or malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such room", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Number in use, or the room is retired", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not sent as application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is unknown, null, of the wrong type or invalid (named in `errors`, `status: retired` included), or the body is not an object", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_room(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    Json(patch): Json<RoomPatch>,
) -> Result<Response, Error> {
    let changes = Changes {
        number: patch.number.map(|n| n.into_string()),
        kind: patch.kind,
        capacity: patch.capacity.map(|c| c.get()),
        nightly_rate_cents: patch.nightly_rate_cents.map(|r| r.get()),
        status: patch.status.map(RoomStatus::from),
    };
    let condition = IfMatch::from_headers(&headers);
    let room = store::update(&app.pool, &app.producer, id, changes, condition.as_ref()).await?;
    Ok(app
        .cache
        .changed(StatusCode::OK, &room.validators, room.value))
}

/// Retire a room: it keeps its id and stays readable but can no longer be booked or
/// changed, and its number is free again. Retiring twice is fine. Publishes
/// `hotel.room.updated` (once: retiring a retired room changes nothing).
#[utoipa::path(
    delete, path = "/rooms/{id}", tag = "rooms",
    params(("id" = Uuid, Path, description = "Room id")),
    responses(
        (status = 200, description = "The retired room", body = Room),
        (status = 400, description = "id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such room", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn retire_room(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Result<Response, Error> {
    let condition = IfMatch::from_headers(&headers);
    let room = store::retire(&app.pool, &app.producer, id, condition.as_ref()).await?;
    tracing::info!(room.id = %id, "room retired");
    Ok(app
        .cache
        .changed(StatusCode::OK, &room.validators, room.value))
}
