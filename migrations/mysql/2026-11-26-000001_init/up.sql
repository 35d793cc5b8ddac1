-- Tollgate schema, MySQL/MariaDB. Timestamps are microseconds since the Unix
-- epoch (UTC). utf8mb4_bin compares names byte for byte, so 'Pro' <> 'pro'.

CREATE TABLE permissions (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name        VARCHAR(64)  NOT NULL,
    description VARCHAR(255) NOT NULL DEFAULT '',
    created_at  BIGINT       NOT NULL,
    updated_at  BIGINT       NOT NULL,
    UNIQUE KEY permissions_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE plans (
    id           BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name         VARCHAR(255)  NOT NULL,
    description  VARCHAR(1000) NOT NULL DEFAULT '',
    usage_limit  BIGINT        NULL,
    usage_period VARCHAR(16)   NOT NULL,
    created_at   BIGINT        NOT NULL,
    updated_at   BIGINT        NOT NULL,
    UNIQUE KEY plans_name (name),
    CONSTRAINT plans_limit_ok CHECK (usage_limit IS NULL OR usage_limit >= 0),
    CONSTRAINT plans_period_ok CHECK (usage_period IN ('lifetime', 'day', 'month'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE plan_permissions (
    plan_id       BIGINT NOT NULL,
    permission_id BIGINT NOT NULL,
    position      INT    NOT NULL,
    PRIMARY KEY (plan_id, permission_id),
    KEY plan_permissions_permission (permission_id),
    CONSTRAINT plan_permissions_plan FOREIGN KEY (plan_id) REFERENCES plans (id) ON DELETE CASCADE,
    CONSTRAINT plan_permissions_permission_fk FOREIGN KEY (permission_id) REFERENCES permissions (id) ON DELETE RESTRICT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE users (
    id         BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username   VARCHAR(64) NOT NULL,
    role       VARCHAR(16) NOT NULL,
    status     VARCHAR(16) NOT NULL,
    created_at BIGINT      NOT NULL,
    updated_at BIGINT      NOT NULL,
    UNIQUE KEY users_username (username),
    KEY users_role_status (role, status),
    CONSTRAINT users_role_ok CHECK (role IN ('admin', 'user')),
    CONSTRAINT users_status_ok CHECK (status IN ('active', 'suspended'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE api_keys (
    id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id    BIGINT       NOT NULL,
    name       VARCHAR(100) NOT NULL DEFAULT '',
    prefix     VARCHAR(32)  NOT NULL,
    key_hash   CHAR(64)     NOT NULL,
    created_at BIGINT       NOT NULL,
    expires_at BIGINT       NULL,
    revoked_at BIGINT       NULL,
    UNIQUE KEY api_keys_hash (key_hash),
    KEY api_keys_user (user_id),
    CONSTRAINT api_keys_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE subscriptions (
    id             BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id        BIGINT      NOT NULL,
    plan_id        BIGINT      NOT NULL,
    status         VARCHAR(16) NOT NULL,
    active_user_id BIGINT      NULL,
    started_at     BIGINT      NOT NULL,
    canceled_at    BIGINT      NULL,
    UNIQUE KEY subscriptions_one_active (active_user_id),
    KEY subscriptions_user (user_id),
    KEY subscriptions_plan_status (plan_id, status),
    CONSTRAINT subscriptions_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT subscriptions_plan_fk FOREIGN KEY (plan_id) REFERENCES plans (id) ON DELETE RESTRICT,
    CONSTRAINT subscriptions_status_ok CHECK (status IN ('active', 'canceled'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE usage_counters (
    subscription_id BIGINT NOT NULL,
    period_start    BIGINT NOT NULL,
    used            BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (subscription_id, period_start),
    CONSTRAINT usage_counters_subscription FOREIGN KEY (subscription_id) REFERENCES subscriptions (id) ON DELETE CASCADE,
    CONSTRAINT usage_counters_used_ok CHECK (used >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE usage_events (
    id              BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id         BIGINT      NOT NULL,
    subscription_id BIGINT      NOT NULL,
    permission      VARCHAR(64) NOT NULL,
    cost            BIGINT      NOT NULL,
    at              BIGINT      NOT NULL,
    -- One index serves the user's event list, the window sums and the
    -- foreign key: every index costs each granted check a write.
    KEY usage_events_user_at (user_id, at),
    CONSTRAINT usage_events_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT usage_events_cost_ok CHECK (cost > 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
