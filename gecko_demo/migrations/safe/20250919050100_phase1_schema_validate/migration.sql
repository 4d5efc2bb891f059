-- Safe rewrite of phase1_schema, step 2 of 4: validate. VALIDATE CONSTRAINT scans the
-- table under SHARE UPDATE EXCLUSIVE: reads and writes go on meanwhile.
SET lock_timeout = '5s';
SET statement_timeout = '10min';
ALTER TABLE "Issue" VALIDATE CONSTRAINT "Issue_evidenceId_fkey";
ALTER TABLE "Scan" VALIDATE CONSTRAINT "Scan_progress_check";
ALTER TABLE "Issue" VALIDATE CONSTRAINT "Issue_sortWeight_not_null";
