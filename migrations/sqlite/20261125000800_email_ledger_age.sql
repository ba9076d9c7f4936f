-- The `jobs` purge removes email ledger rows by age once their jobs are gone (wharf::purge).
CREATE INDEX wharf_email_sends_accepted ON wharf_email_sends (accepted_at);
