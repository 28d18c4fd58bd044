//! Management API over HTTP (issue 3).
