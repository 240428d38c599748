//! Bearer-token authentication and roles. Tokens are stored only as SHA-256; each
//! request looks its token up again, so a changed role applies to the next request.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::ApiError;
use crate::roles::Role;
use crate::store::prelude::*;
use crate::util::sha256;

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this needs the {role} role; you are {}", self.role),
            ))
        }
    }
}

/// Longest bearer token accepted; longer ones are refused before hashing.
const MAX_TOKEN_LEN: usize = 256;

pub async fn authenticate(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_LEN);
    let Some(token) = token else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "missing or malformed bearer token").into_response();
    };
    let hash = sha256(token.as_bytes());
    let user = match state.reads.run(move |s| s.user_by_token(&hash)).await {
        Ok(Ok(user)) => user,
        Ok(Err(e)) | Err(e) => return ApiError::from(e).into_response(),
    };
    let Some(user) = user else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "unknown token").into_response();
    };
    let Ok(role) = user.role.parse() else {
        return ApiError::new(StatusCode::FORBIDDEN, "user has an unknown role").into_response();
    };
    req.extensions_mut().insert(Caller { name: user.name, role });
    next.run(req).await
}
