-- Fresh install (20251029154900_init): plain CREATE INDEX, no partial
-- indexes, no INCLUDE columns.
CREATE INDEX "Scan_dedupe_lookup_idx" ON "Scan"("normalizedInput", "status", "finishedAt" DESC);
CREATE INDEX "Scan_recent_reports_idx" ON "Scan"("status", "createdAt" DESC);
CREATE INDEX "Evidence_scan_covering_idx" ON "Evidence"("scanId", "createdAt");
CREATE INDEX "Issue_scan_covering_idx" ON "Issue"("scanId", "sortWeight", "createdAt");
CREATE INDEX "Issue_severity_idx" ON "Issue"("severity", "sortWeight");
