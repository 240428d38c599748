//! Package.
