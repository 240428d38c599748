//! Process kill.
