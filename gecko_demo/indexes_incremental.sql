-- Incrementally migrated database (the live stage DB): the end state of the
-- incremental migration chain. The two hot Scan indexes are partial, the status
-- index and three redundant scanId indexes survive, and the Issue severity
-- index keeps its phase-1 name.
CREATE INDEX "Scan_status_finishedAt_idx" ON "Scan"("status", "finishedAt");
CREATE INDEX "Scan_dedupe_lookup_idx" ON "Scan"("normalizedInput", "status", "finishedAt" DESC)
    WHERE "normalizedInput" IS NOT NULL AND "status" = 'done';
CREATE INDEX "Scan_recent_reports_idx" ON "Scan"("status", "createdAt" DESC)
    WHERE "status" = 'done';
CREATE INDEX "Evidence_scanId_idx" ON "Evidence"("scanId");
CREATE INDEX "Evidence_scan_covering_idx" ON "Evidence"("scanId", "createdAt");
CREATE INDEX "Evidence_scanId_count_idx" ON "Evidence"("scanId");
CREATE INDEX "Issue_scanId_idx" ON "Issue"("scanId");
CREATE INDEX "Issue_scan_covering_idx" ON "Issue"("scanId", "sortWeight", "createdAt");
CREATE INDEX "Issue_severity_sortWeight_idx" ON "Issue"("severity", "sortWeight");

-- The password-reset migration of the chain gave updatedAt a default.
ALTER TABLE "PasswordResetToken" ALTER COLUMN "updatedAt" SET DEFAULT CURRENT_TIMESTAMP;
