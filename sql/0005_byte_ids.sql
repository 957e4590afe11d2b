-- Ids compare as bytes. The tables meant binary comparison throughout,
-- but a column declared `CHARACTER SET ascii` without a collation takes
-- the character set's default, ascii_general_ci: every key comparison on
-- a user or record id went through a case-folding collation. That was
-- most of the server's key-comparison time on a page of 1,000 records
-- (each row is found again in the primary key, whose leading user_id is
-- compared in full at every level), and it never mattered for meaning:
-- user ids are generated lower-case, record ids are stored in the
-- canonical lower-case form (`canonical_uuid`), family ids and routes are
-- the binary's own. No two stored values differ by case alone, so the
-- stricter collation makes no key collide.
--
-- Each statement rebuilds its table (the primary key changes collation):
-- on a large account this takes a while and, on a Galera cluster, holds
-- the cluster for it (DDL runs in total order).
ALTER TABLE users
    MODIFY id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;

ALTER TABLE health_metrics
    MODIFY user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY id      CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;

ALTER TABLE medications
    MODIFY user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY id      CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;

ALTER TABLE meals
    MODIFY user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY id      CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;

ALTER TABLE exercises
    MODIFY user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY id      CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;

ALTER TABLE meal_plans
    MODIFY user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY id      CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;

ALTER TABLE refresh_tokens
    MODIFY user_id   CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY family_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;

ALTER TABLE sync_status
    MODIFY user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;

ALTER TABLE idempotency_keys
    MODIFY user_id CHAR(36)    CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY route   VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;

ALTER TABLE conflict_log
    MODIFY user_id     CHAR(36)    CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY entity_type VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY entity_id   CHAR(36)    CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY resolution  VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;
