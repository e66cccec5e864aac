//! Label writer tests.
