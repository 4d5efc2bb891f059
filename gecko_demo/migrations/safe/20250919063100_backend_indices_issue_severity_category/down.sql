DROP INDEX CONCURRENTLY IF EXISTS "Issue_severity_category_idx";
