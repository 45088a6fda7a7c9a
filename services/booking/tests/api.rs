//! In-process tests of every booking endpoint and error, against fakes of the customer
//! and room HTTP APIs.

#![allow(clippy::unwrap_used)]

mod support;

mod sqlite {
    const BACKEND: super::support::Backend = super::support::Backend::Sqlite;
    include!("api/cases.rs");
}

mod postgres {
    const BACKEND: super::support::Backend = super::support::Backend::Postgres;
    include!("api/cases.rs");

    /// On PostgreSQL the no-overlap rule does not rest on the service's check alone: the
    /// exclusion constraint refuses a second confirmed booking of a room for overlapping
    /// nights whoever writes it, while adjacent stays, cancelled bookings and other rooms
    /// pass.
    #[tokio::test]
    async fn the_database_itself_refuses_overlapping_confirmed_bookings_of_one_room() {
        let Some(db) = TestDb::new(BACKEND, "booking-exclusion").await else {
            return;
        };
        let any: std::net::SocketAddr = ([127, 0, 0, 1], 1).into();
        let pool = hotel_booking::open_database(&super::support::settings(&db, any, any))
            .await
            .unwrap();
        let insert = |room: &'static str, check_in: &str, check_out: &str, status: &str| {
            let (pool, check_in, check_out, status) = (
                pool.clone(),
                check_in.to_owned(),
                check_out.to_owned(),
                status.to_owned(),
            );
            async move {
                sqlx::query(
                    "INSERT INTO bookings (id, customer_id, room_id, check_in, check_out, \
                     guests, status, total_cents, created_at) \
                     VALUES ($1, $2, $3, $4, $5, 1, $6, 100, 0)",
                )
                .bind(Uuid::new_v4().to_string())
                .bind(Uuid::new_v4().to_string())
                .bind(room)
                .bind(check_in)
                .bind(check_out)
                .bind(status)
                .execute(&pool)
                .await
                .map(|_| ())
            }
        };
        insert("room-a", "2027-01-01", "2027-01-04", "confirmed")
            .await
            .unwrap();
        let clash = insert("room-a", "2027-01-03", "2027-01-05", "confirmed")
            .await
            .unwrap_err();
        assert!(
            hotel_common::db::is_exclusion_violation(&clash, "bookings_no_overlap"),
            "{clash}"
        );
        insert("room-a", "2027-01-04", "2027-01-06", "confirmed")
            .await
            .expect("leaving on the 4th and arriving on the 4th do not clash");
        insert("room-a", "2027-01-02", "2027-01-03", "cancelled")
            .await
            .expect("a cancelled booking holds no nights");
        insert("room-b", "2027-01-01", "2027-01-04", "confirmed")
            .await
            .expect("another room");
        let bad = insert("room-c", "01/02/2027", "2027-01-04", "confirmed")
            .await
            .unwrap_err();
        assert!(
            bad.to_string().contains("check"),
            "only ISO dates are stored: {bad}"
        );
    }
}
