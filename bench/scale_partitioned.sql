-- The partitioned layout docs/scale.md proposes for a city or a province, in a schema of
-- its own (scale) beside the service's tables: the tables that grow with people and
-- time are split by the 6-digit county code (district_code), events also by year; the
-- boundaries stay one shared table each (a reference table under Citus).
-- Every unique key holds the partition key: PostgreSQL refuses one that does not, and
-- Citus needs the distribution column in it the same way.
-- Used by bench/scale.py (figures) and tests/layers/test_scale_layout.py (pruning).

CREATE SCHEMA IF NOT EXISTS scale;

CREATE TABLE scale.members (
    district_code char(6) NOT NULL,
    id bigint NOT NULL,
    number text,
    name text NOT NULL,
    phone text,
    status text NOT NULL,
    PRIMARY KEY (district_code, id),
    UNIQUE (district_code, number)
) PARTITION BY LIST (district_code);

CREATE TABLE scale.residences (
    district_code char(6) NOT NULL,
    id bigint NOT NULL,
    member_id bigint NOT NULL,
    geom geometry(Point, 4326) NOT NULL,
    recorded_at timestamptz NOT NULL,
    ended_at timestamptz,
    PRIMARY KEY (district_code, id),
    FOREIGN KEY (district_code, member_id) REFERENCES scale.members (district_code, id)
) PARTITION BY LIST (district_code);

CREATE TABLE scale.registrations (
    district_code char(6) NOT NULL,
    id bigint NOT NULL,
    member_id bigint NOT NULL,
    grid_id integer NOT NULL,       -- the shared grids table: no foreign key across the split
    status text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (district_code, id),
    FOREIGN KEY (district_code, member_id) REFERENCES scale.members (district_code, id)
) PARTITION BY LIST (district_code);

CREATE TABLE scale.events (
    district_code char(6) NOT NULL,
    id bigint NOT NULL,
    reported_at timestamptz NOT NULL,
    geom geometry(Point, 4326) NOT NULL,
    category_code text NOT NULL,
    grid_id integer,
    status text NOT NULL,
    due_at timestamptz,
    closed_at timestamptz,
    PRIMARY KEY (district_code, reported_at, id)
) PARTITION BY LIST (district_code);

CREATE INDEX ON scale.residences USING gist (geom);
CREATE INDEX ON scale.registrations (grid_id);
CREATE INDEX ON scale.events (grid_id);
CREATE INDEX ON scale.events USING gist (geom);

-- scale.add_district('410102', 2026, 2027): the partitions of one county, its events by
-- year (a year's partition is detached and archived whole when its retention ends)
CREATE OR REPLACE FUNCTION scale.add_district(code text, first_year int, last_year int) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE y int;
BEGIN
    EXECUTE format('CREATE TABLE scale.members_%s PARTITION OF scale.members FOR VALUES IN (%L)', code, code);
    EXECUTE format('CREATE TABLE scale.residences_%s PARTITION OF scale.residences FOR VALUES IN (%L)', code, code);
    EXECUTE format('CREATE TABLE scale.registrations_%s PARTITION OF scale.registrations FOR VALUES IN (%L)',
                   code, code);
    EXECUTE format('CREATE TABLE scale.events_%s PARTITION OF scale.events FOR VALUES IN (%L) '
                   'PARTITION BY RANGE (reported_at)', code, code);
    FOR y IN first_year..last_year LOOP
        EXECUTE format('CREATE TABLE scale.events_%s_%s PARTITION OF scale.events_%s '
                       'FOR VALUES FROM (%L) TO (%L)', code, y, code,
                       make_timestamptz(y, 1, 1, 0, 0, 0, 'Asia/Shanghai'),
                       make_timestamptz(y + 1, 1, 1, 0, 0, 0, 'Asia/Shanghai'));
    END LOOP;
END $$;
