//! The Ward collector.
