//! HTTP handlers of `/rooms` and the OpenAPI document generated from them.
//!
//! Routes are declared once, through `utoipa_axum::routes!`, so the router and the
//! document are built from the same list and cannot drift apart.

use crate::{
    error::Error,
    model::{ListQuery, NewRoom, Room, RoomPatch, RoomStatus, valid_min_capacity},
    store::{self, Changes, Filter},
};
use axum::{Router, extract::State, http::StatusCode};
use hotel_common::{
    Problem,
    extract::{Json, Path, Query},
    page::{self, Keyset, Page},
};
use hotel_events::Producer;
use hotel_service::DatabaseState;
use sqlx::SqlitePool;
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

/// The room routes (without the shared layers) and the OpenAPI document describing
/// exactly those routes.
pub fn api(state: DatabaseState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut doc) = declared().with_state(state).split_for_parts();
    link(&mut doc);
    (router, doc)
}

/// The OpenAPI document of the room routes, built without a database.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = declared().into_openapi();
    link(&mut doc);
    doc
}

/// Links from a create to the read, update and retirement of the room it made.
fn link(doc: &mut utoipa::openapi::OpenApi) {
    hotel_common::openapi::link_created(doc, "/rooms", &["/rooms/{id}"]);
}

/// Every room route, each declared once for both the router and the document.
fn declared() -> OpenApiRouter<DatabaseState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create_room, list_rooms))
        .routes(routes!(get_room, update_room, retire_room))
}

/// Create a room; it starts available.
#[utoipa::path(
    post, path = "/rooms", tag = "rooms",
    request_body = NewRoom,
    responses(
        (status = 201, description = "Created", body = Room),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Number already in use", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not sent as application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing, unknown, of the wrong type or invalid (named in `errors`), or the body is not an object", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_room(
    State(pool): State<SqlitePool>,
    Json(body): Json<NewRoom>,
) -> Result<(StatusCode, Json<Room>), Error> {
    let room = store::insert(
        &pool,
        body.number.into_string(),
        body.kind,
        body.capacity.get(),
        body.nightly_rate_cents.get(),
    )
    .await?;
    tracing::info!(room.id = %room.id, room.number = %room.number, "room created");
    Ok((StatusCode::CREATED, Json(room)))
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
    State(pool): State<SqlitePool>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<Room>>, Error> {
    let limit = page::limit(q.limit)?;
    let after = page::after::<Keyset>(q.cursor.as_deref())?;
    let min_capacity = q.min_capacity.map(valid_min_capacity).transpose()?;
    let filter = Filter {
        kind: q.kind,
        min_capacity,
        status: q.status,
    };
    Ok(Json(store::list(&pool, filter, after, limit).await?))
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
    State(pool): State<SqlitePool>,
    Path(id): Path<Uuid>,
) -> Result<Json<Room>, Error> {
    Ok(Json(store::get(&pool, id).await?))
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
    State(pool): State<SqlitePool>,
    State(producer): State<Producer>,
    Path(id): Path<Uuid>,
    Json(patch): Json<RoomPatch>,
) -> Result<Json<Room>, Error> {
    let changes = Changes {
        number: patch.number.map(|n| n.into_string()),
        kind: patch.kind,
        capacity: patch.capacity.map(|c| c.get()),
        nightly_rate_cents: patch.nightly_rate_cents.map(|r| r.get()),
        status: patch.status.map(RoomStatus::from),
    };
    Ok(Json(store::update(&pool, &producer, id, changes).await?))
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
    State(pool): State<SqlitePool>,
    State(producer): State<Producer>,
    Path(id): Path<Uuid>,
) -> Result<Json<Room>, Error> {
    let room = store::retire(&pool, &producer, id).await?;
    tracing::info!(room.id = %id, "room retired");
    Ok(Json(room))
}
