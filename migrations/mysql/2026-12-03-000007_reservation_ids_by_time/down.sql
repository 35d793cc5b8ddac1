-- Fails (strict mode) while reservations with the longer ids exist.
ALTER TABLE reservations MODIFY id VARCHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;
