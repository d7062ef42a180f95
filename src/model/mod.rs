//! Learned models on disk (`models/`): the versioned, atomically written store. The model
//! contents (routes, endpoint and caller profiles) are defined by `inventory` and `baseline`.

pub mod store;
