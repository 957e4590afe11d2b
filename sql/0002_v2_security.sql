-- The v2 rules of the contract that need schema.

-- Wrong passwords, counted against the account they name (contract
-- section 2, v2 guessing limits): 10 per account per client address in 15
-- minutes, 100 per account in an hour. One row per failure, so the
-- windows slide exactly; rows older than an hour are swept by the
-- failures that come after them and by `healthsync purge`.
-- account: SHA-256 of the normalized email (the table holds no address of
-- anyone's mailbox, and unknown emails count the same as known ones).
-- address: the client address, IPv4 whole, IPv6 by its /64 prefix.
-- InnoDB, not MEMORY: a failure must survive a restart, and a replicated
-- cluster replicates only InnoDB. Written only on failures.
CREATE TABLE auth_failures (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    account     BINARY(32)      NOT NULL,
    address     VARBINARY(64)   NOT NULL,
    failed_at   BIGINT          NOT NULL,
    PRIMARY KEY (id),
    KEY by_account (account, failed_at),
    KEY by_account_address (account, address, failed_at),
    KEY by_time (failed_at)
) ENGINE=InnoDB;

-- Refresh rotation (contract section 2, v2): the token a spent one was
-- rotated into, so a spent token presented again within the grace period
-- is rotated once more only while that successor is unused; a captured
-- token replayed after the owner moved on revokes the family instead.
ALTER TABLE refresh_tokens ADD COLUMN successor_hash BINARY(32) NULL AFTER spent_at;

-- Ended rate-limit windows are swept by range, not by a scan of the whole
-- table under its lock (MEMORY tables lock whole).
ALTER TABLE rate_limits ADD KEY rate_limits_window (window_start) USING BTREE;

-- Quotas (contract section 7, v2): each user's rows over the five entities
-- (tombstones included) and the bytes of their data, kept exact by every
-- transaction that writes or purges records, so no request counts them.
-- Filled here from the rows (on MySQL, whose JSON type prints with spaces,
-- LENGTH slightly overstates what was stored; the counts stay exact).
ALTER TABLE users
    ADD COLUMN record_count BIGINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN data_bytes   BIGINT UNSIGNED NOT NULL DEFAULT 0;
UPDATE users SET
    record_count =
        (SELECT COUNT(*) FROM health_metrics WHERE user_id = users.id)
      + (SELECT COUNT(*) FROM medications WHERE user_id = users.id)
      + (SELECT COUNT(*) FROM meals WHERE user_id = users.id)
      + (SELECT COUNT(*) FROM exercises WHERE user_id = users.id)
      + (SELECT COUNT(*) FROM meal_plans WHERE user_id = users.id),
    data_bytes =
        (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM health_metrics WHERE user_id = users.id)
      + (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM medications WHERE user_id = users.id)
      + (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM meals WHERE user_id = users.id)
      + (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM exercises WHERE user_id = users.id)
      + (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM meal_plans WHERE user_id = users.id);

-- Exports per user (contract section 7, v2: 10 an hour): a window that
-- starts at the first export after the last one ended, counted in the
-- export's own transaction under the user's row lock.
ALTER TABLE users
    ADD COLUMN exports_since BIGINT NULL,
    ADD COLUMN exports_count INT UNSIGNED NOT NULL DEFAULT 0;
