//! Sensors: processes, files, authentication, audit, inventory.
