-- Exactly-once and verifiable sync (contract section 9).

-- State digests (9.2), one per entity, kept on the user row that every
-- writer already locks and updates: a write XORs out the hash of the
-- (id, version) it replaces and XORs in the new one, so no request ever
-- recomputes them. Beside each, the highest version ever written to that
-- entity: a pull whose page ends at or above it holds the entity's whole
-- state at the page's token, so the digest read with it is exact there.
-- A purge deletes rows but changes neither.
-- conflict_seq: the last `seq` of the user's conflict log (9.4), never
-- reused, even after a purge emptied the log.
ALTER TABLE users
    ADD COLUMN health_metrics_digest  BIGINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN health_metrics_version BIGINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN medications_digest     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN medications_version    BIGINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN meals_digest           BIGINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN meals_version          BIGINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN exercises_digest       BIGINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN exercises_version      BIGINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN meal_plans_digest      BIGINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN meal_plans_version     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN conflict_seq           BIGINT UNSIGNED NOT NULL DEFAULT 0;

-- Existing accounts: a record's hash is the first 8 bytes of
-- SHA-256("<id>:<version>") as a big-endian integer (16 hex digits read
-- by CONV, which works in 64-bit unsigned), XORed over the user's rows.
-- A purge that ran before this migration already removed its tombstones:
-- their hashes cannot be recovered and are left out, so devices that
-- still hold such a tombstone see one mismatch and repair it (9.3).
-- The highest version written is at least the highest version stored.
UPDATE users SET
    health_metrics_digest = (SELECT COALESCE(BIT_XOR(CAST(CONV(LEFT(SHA2(CONCAT(id, ':', version), 256), 16), 16, 10) AS UNSIGNED)), 0)
                             FROM health_metrics WHERE user_id = users.id),
    health_metrics_version = (SELECT COALESCE(MAX(version), 0) FROM health_metrics WHERE user_id = users.id),
    medications_digest = (SELECT COALESCE(BIT_XOR(CAST(CONV(LEFT(SHA2(CONCAT(id, ':', version), 256), 16), 16, 10) AS UNSIGNED)), 0)
                          FROM medications WHERE user_id = users.id),
    medications_version = (SELECT COALESCE(MAX(version), 0) FROM medications WHERE user_id = users.id),
    meals_digest = (SELECT COALESCE(BIT_XOR(CAST(CONV(LEFT(SHA2(CONCAT(id, ':', version), 256), 16), 16, 10) AS UNSIGNED)), 0)
                    FROM meals WHERE user_id = users.id),
    meals_version = (SELECT COALESCE(MAX(version), 0) FROM meals WHERE user_id = users.id),
    exercises_digest = (SELECT COALESCE(BIT_XOR(CAST(CONV(LEFT(SHA2(CONCAT(id, ':', version), 256), 16), 16, 10) AS UNSIGNED)), 0)
                        FROM exercises WHERE user_id = users.id),
    exercises_version = (SELECT COALESCE(MAX(version), 0) FROM exercises WHERE user_id = users.id),
    meal_plans_digest = (SELECT COALESCE(BIT_XOR(CAST(CONV(LEFT(SHA2(CONCAT(id, ':', version), 256), 16), 16, 10) AS UNSIGNED)), 0)
                         FROM meal_plans WHERE user_id = users.id),
    meal_plans_version = (SELECT COALESCE(MAX(version), 0) FROM meal_plans WHERE user_id = users.id);

-- Idempotency keys (9.1): the first successful answer to a keyed push or
-- bulk, stored in the same transaction as its writes and replayed byte
-- for byte. Per user (the key leads with user_id), the route and a
-- SHA-256 of the body bytes to refuse a key reused for something else.
-- Kept IDEMPOTENCY_HOURS, then swept lazily by the user's next keyed
-- request and by `healthsync purge`.
CREATE TABLE idempotency_keys (
    user_id     CHAR(36)        CHARACTER SET ascii NOT NULL,
    idem_key    VARBINARY(128)  NOT NULL,
    route       VARCHAR(64)     CHARACTER SET ascii NOT NULL,
    body_hash   BINARY(32)      NOT NULL,
    answer      LONGBLOB        NOT NULL,
    created_at  DATETIME(3)     NOT NULL,
    PRIMARY KEY (user_id, idem_key),
    KEY idempotency_keys_user_age (user_id, created_at),
    KEY idempotency_keys_age (created_at)
) ENGINE=InnoDB;

-- Conflict log (9.4): every conflict a push resolved, written in its
-- transaction. client_version and server_version are the compact JSON of
-- the `conflict_details` entry's fields, sent on as stored. Kept
-- TOMBSTONE_DAYS, then removed by `healthsync purge`.
CREATE TABLE conflict_log (
    user_id         CHAR(36)        CHARACTER SET ascii NOT NULL,
    seq             BIGINT UNSIGNED NOT NULL,
    at              DATETIME(3)     NOT NULL,
    device_id       VARCHAR(128)    CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    entity_type     VARCHAR(32)     CHARACTER SET ascii NOT NULL,
    entity_id       CHAR(36)        CHARACTER SET ascii NOT NULL,
    resolution      VARCHAR(16)     CHARACTER SET ascii NOT NULL,
    client_version  LONGBLOB        NOT NULL,
    server_version  LONGBLOB        NOT NULL,
    PRIMARY KEY (user_id, seq),
    KEY conflict_log_age (at)
) ENGINE=InnoDB;
