//! varc-backend-ref
