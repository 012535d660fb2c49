-- The tables the README examples query, in the fresh database the README examples test creates.
CREATE TABLE invoices (
  id integer PRIMARY KEY,
  status text NOT NULL DEFAULT 'draft',
  total integer NOT NULL DEFAULT 0,
  sent_at timestamptz
);
INSERT INTO invoices (id, total) VALUES (42, 1200);

CREATE TABLE accounts (id integer PRIMARY KEY, balance integer NOT NULL);
INSERT INTO accounts (id, balance) VALUES (7, 1000), (8, 0);

CREATE TABLE ledger (id serial PRIMARY KEY, account integer NOT NULL, amount integer NOT NULL);

CREATE TABLE jobs (id integer PRIMARY KEY, started_at timestamptz, finished_at timestamptz);
INSERT INTO jobs (id) VALUES (7);

CREATE TABLE reports (id integer PRIMARY KEY, body text, fence xid8 NOT NULL DEFAULT '0');
INSERT INTO reports (id) VALUES (7);
