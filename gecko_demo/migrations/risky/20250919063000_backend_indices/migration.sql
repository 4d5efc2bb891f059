-- Risky shape of Gecko Advisor's 20250919063000_backend_indices: plain DROP INDEX and
-- CREATE INDEX on live tables, several per file. `gecko-exporter lint` fails it.

-- DropIndex
DROP INDEX IF EXISTS "Evidence_scanId_count_idx";

-- DropIndex
DROP INDEX IF EXISTS "Issue_scanId_idx";

-- CreateIndex
CREATE INDEX "Scan_dedupeOfId_idx" ON "Scan"("dedupeOfId");

-- CreateIndex
CREATE INDEX "Issue_severity_category_idx" ON "Issue"("severity", "category");
