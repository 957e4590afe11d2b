-- healthsync schema, version 1.
--
-- Accepted by MySQL 8 and MariaDB 10.11 alike. Every table that holds user
-- data leads its primary key with user_id: a record is (user_id, id), never
-- id alone, so a UUID another user holds neither collides nor leaks.
-- Times are DATETIME(3) in UTC, written by the binary (never NOW(), whose
-- meaning depends on the session time zone).

CREATE TABLE users (
    id               CHAR(36)      CHARACTER SET ascii NOT NULL,
    -- Trimmed and lower-cased by the binary; compared byte for byte, so
    -- 'jose@' and 'josé@' stay two accounts.
    email            VARCHAR(254)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    password_hash    VARCHAR(255)  CHARACTER SET ascii NOT NULL,
    name             VARCHAR(255)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    -- Bumped by logout-all, password change and erasure: every token
    -- carries it, and a token with an older one is refused.
    token_version    INT UNSIGNED  NOT NULL DEFAULT 0,
    sync_enabled     BOOLEAN       NOT NULL DEFAULT TRUE,
    -- The user's change sequence: every record write takes the next value,
    -- allocated under this row's lock, so versions commit in order.
    change_counter   BIGINT UNSIGNED NOT NULL DEFAULT 0,
    -- Server receive time of the latest write, kept strictly increasing
    -- per user so `since` cursors are exact.
    last_write_at    DATETIME(3)   NULL,
    last_sync_at     DATETIME(3)   NULL,
    -- Tombstone purge watermark: cursors older than these get 410.
    purged_version   BIGINT UNSIGNED NOT NULL DEFAULT 0,
    purged_before    DATETIME(3)   NULL,
    created_at       DATETIME(3)   NOT NULL,
    updated_at       DATETIME(3)   NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY users_email (email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE health_metrics (
    user_id           CHAR(36)      CHARACTER SET ascii NOT NULL,
    id                CHAR(36)      CHARACTER SET ascii NOT NULL,
    data              JSON          NOT NULL,
    updated_at        DATETIME(3)   NOT NULL,
    deleted_at        DATETIME(3)   NULL,
    server_updated_at DATETIME(3)   NOT NULL,
    version           BIGINT UNSIGNED NOT NULL,
    created_at        DATETIME(3)   NOT NULL,
    PRIMARY KEY (user_id, id),
    KEY health_metrics_version (user_id, version),
    KEY health_metrics_received (user_id, server_updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE medications (
    user_id           CHAR(36)      CHARACTER SET ascii NOT NULL,
    id                CHAR(36)      CHARACTER SET ascii NOT NULL,
    data              JSON          NOT NULL,
    updated_at        DATETIME(3)   NOT NULL,
    deleted_at        DATETIME(3)   NULL,
    server_updated_at DATETIME(3)   NOT NULL,
    version           BIGINT UNSIGNED NOT NULL,
    created_at        DATETIME(3)   NOT NULL,
    PRIMARY KEY (user_id, id),
    KEY medications_version (user_id, version),
    KEY medications_received (user_id, server_updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE meals (
    user_id           CHAR(36)      CHARACTER SET ascii NOT NULL,
    id                CHAR(36)      CHARACTER SET ascii NOT NULL,
    data              JSON          NOT NULL,
    updated_at        DATETIME(3)   NOT NULL,
    deleted_at        DATETIME(3)   NULL,
    server_updated_at DATETIME(3)   NOT NULL,
    version           BIGINT UNSIGNED NOT NULL,
    created_at        DATETIME(3)   NOT NULL,
    PRIMARY KEY (user_id, id),
    KEY meals_version (user_id, version),
    KEY meals_received (user_id, server_updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE exercises (
    user_id           CHAR(36)      CHARACTER SET ascii NOT NULL,
    id                CHAR(36)      CHARACTER SET ascii NOT NULL,
    data              JSON          NOT NULL,
    updated_at        DATETIME(3)   NOT NULL,
    deleted_at        DATETIME(3)   NULL,
    server_updated_at DATETIME(3)   NOT NULL,
    version           BIGINT UNSIGNED NOT NULL,
    created_at        DATETIME(3)   NOT NULL,
    PRIMARY KEY (user_id, id),
    KEY exercises_version (user_id, version),
    KEY exercises_received (user_id, server_updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE meal_plans (
    user_id           CHAR(36)      CHARACTER SET ascii NOT NULL,
    id                CHAR(36)      CHARACTER SET ascii NOT NULL,
    data              JSON          NOT NULL,
    updated_at        DATETIME(3)   NOT NULL,
    deleted_at        DATETIME(3)   NULL,
    server_updated_at DATETIME(3)   NOT NULL,
    version           BIGINT UNSIGNED NOT NULL,
    created_at        DATETIME(3)   NOT NULL,
    PRIMARY KEY (user_id, id),
    KEY meal_plans_version (user_id, version),
    KEY meal_plans_received (user_id, server_updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Refresh tokens, stored only as SHA-256 of the token. A family is one
-- login's chain of rotations; reuse of a spent token revokes the family.
CREATE TABLE refresh_tokens (
    user_id        CHAR(36)     CHARACTER SET ascii NOT NULL,
    token_hash     BINARY(32)   NOT NULL,
    family_id      CHAR(36)     CHARACTER SET ascii NOT NULL,
    issued_at      DATETIME(3)  NOT NULL,
    expires_at     DATETIME(3)  NOT NULL,
    -- Set when the token was rotated (spent); a second presentation within
    -- the grace period rotates once more, after that it revokes the family.
    spent_at       DATETIME(3)  NULL,
    grace_used     BOOLEAN      NOT NULL DEFAULT FALSE,
    revoked_at     DATETIME(3)  NULL,
    PRIMARY KEY (user_id, token_hash),
    KEY refresh_tokens_family (user_id, family_id)
) ENGINE=InnoDB DEFAULT CHARSET=ascii COLLATE=ascii_bin;

-- Last sync per device, shown by GET /account.
CREATE TABLE sync_status (
    user_id         CHAR(36)      CHARACTER SET ascii NOT NULL,
    device_id       VARCHAR(128)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    last_sync_at    DATETIME(3)   NOT NULL,
    last_sync_token BIGINT UNSIGNED NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Fixed-window rate-limit counters. MEMORY: one upsert per request without
-- a redo-log flush; a MySQL restart resets the windows, which a rate limit
-- can afford. Expired rows are deleted by requests now and then (no cron).
-- bucket: 'u:' + user id, 'a:' + client address, 'e:' + SHA-256 of the email.
CREATE TABLE rate_limits (
    bucket        VARBINARY(80) NOT NULL,
    window_start  BIGINT        NOT NULL,
    hits          INT UNSIGNED  NOT NULL,
    PRIMARY KEY (bucket)
) ENGINE=MEMORY;
