-- Safe rewrite of phase1_schema, step 1 of 4: expand. Metadata-only changes, each
-- waiting at most lock_timeout for its lock (a statement queued behind a long
-- transaction would block every query on the table while it waits).
SET lock_timeout = '5s';
SET statement_timeout = '30s';

-- A new column instead of RENAME COLUMN: the running release keeps using "shareMessage";
-- the next one writes both and reads "shareText" (backfilled in batches, outside migrations).
ALTER TABLE "Scan" ADD COLUMN IF NOT EXISTS "shareText" TEXT;

-- NOT NULL with a constant default: no table rewrite on PostgreSQL 11+.
ALTER TABLE "Scan" ADD COLUMN IF NOT EXISTS "reportVersion" INTEGER NOT NULL DEFAULT 1;

-- A column of the new type instead of ALTER COLUMN TYPE (which rewrites "Scan"):
-- dual-write, backfill, switch reads, drop "score" in a later release.
ALTER TABLE "Scan" ADD COLUMN IF NOT EXISTS "scoreExact" DOUBLE PRECISION;

-- The renamed field gets its own column; "whyItMatters" stays until the app stops using it.
ALTER TABLE "Issue" ADD COLUMN IF NOT EXISTS "impact" TEXT;
ALTER TABLE "Issue" ADD COLUMN IF NOT EXISTS "evidenceId" TEXT;

-- Constraints NOT VALID: checked for new rows from now on, no scan under the lock.
-- They are validated in the next migration (a separate transaction).
ALTER TABLE "Issue" ADD CONSTRAINT "Issue_evidenceId_fkey" FOREIGN KEY ("evidenceId") REFERENCES "Evidence"("id") ON DELETE SET NULL ON UPDATE CASCADE NOT VALID;
ALTER TABLE "Scan" ADD CONSTRAINT "Scan_progress_check" CHECK ("progress" BETWEEN 0 AND 100) NOT VALID;
ALTER TABLE "Issue" ADD CONSTRAINT "Issue_sortWeight_not_null" CHECK ("sortWeight" IS NOT NULL) NOT VALID;
