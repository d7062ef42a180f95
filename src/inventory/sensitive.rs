//! Sensitive-data classification (in progress).
