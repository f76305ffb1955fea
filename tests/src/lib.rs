//! Shared helpers for the varc test suites.
