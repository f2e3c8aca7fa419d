//! The OpenAPI document's frame; paths and schemas come from the handlers.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "SmartPOS command API",
        description = "Terminals submit orders and payments. Amounts are integer minor units of an ISO 4217 currency. Every POST but the token exchange needs an Idempotency-Key. Errors are RFC 9457 problem+json.",
        version = "1"
    ),
    components(schemas(crate::http::error::Problem, crate::http::error::FieldProblem)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
    }
}
