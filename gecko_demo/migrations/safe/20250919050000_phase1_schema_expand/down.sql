-- Rollback of 20250919050000_phase1_schema_expand (run with psql, then
-- `prisma migrate resolve --rolled-back 20250919050000_phase1_schema_expand`).
SET lock_timeout = '5s';
ALTER TABLE "Issue" DROP CONSTRAINT IF EXISTS "Issue_sortWeight_not_null";
ALTER TABLE "Scan" DROP CONSTRAINT IF EXISTS "Scan_progress_check";
ALTER TABLE "Issue" DROP CONSTRAINT IF EXISTS "Issue_evidenceId_fkey";
ALTER TABLE "Issue" DROP COLUMN IF EXISTS "evidenceId", DROP COLUMN IF EXISTS "impact";
ALTER TABLE "Scan" DROP COLUMN IF EXISTS "scoreExact", DROP COLUMN IF EXISTS "reportVersion", DROP COLUMN IF EXISTS "shareText";
