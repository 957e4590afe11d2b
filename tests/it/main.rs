//! Integration tests: the real binary, spawned as CGI, against a real
//! MySQL/MariaDB, one throwaway database per test.

mod support;

mod accounts;
mod sync;
mod transport;
