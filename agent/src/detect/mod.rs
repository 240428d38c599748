//! Detection: Sigma rules (rsigma) evaluated over sensor events.
