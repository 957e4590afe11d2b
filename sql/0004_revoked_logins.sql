-- Revoked logins on the user row (contract section 2, v2: a revoked
-- refresh-token family takes its access tokens with it). Every
-- authenticated request reads the user row already; with the revoked
-- logins in it, refusing such an access token costs no subquery into
-- refresh_tokens. Entries are `family@unix_seconds`, separated by spaces,
-- NULL for none; each revocation drops the entries whose access tokens
-- have all expired.
ALTER TABLE users ADD COLUMN revoked_logins MEDIUMTEXT CHARACTER SET ascii NULL;

-- Logins revoked before this migration whose access tokens may still be
-- unexpired (an access token lives an hour; a day is kept). MySQL's
-- default GROUP_CONCAT limit of 1024 bytes would cut a long list short.
SET SESSION group_concat_max_len = 16777216;

UPDATE users SET revoked_logins = (
    SELECT GROUP_CONCAT(DISTINCT CONCAT(family_id, '@', TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', revoked_at)) SEPARATOR ' ')
    FROM refresh_tokens
    WHERE refresh_tokens.user_id = users.id
      AND revoked_at IS NOT NULL
      AND revoked_at > UTC_TIMESTAMP() - INTERVAL 1 DAY
);
