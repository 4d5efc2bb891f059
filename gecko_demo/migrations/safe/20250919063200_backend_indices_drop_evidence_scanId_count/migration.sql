DROP INDEX CONCURRENTLY IF EXISTS "Evidence_scanId_count_idx";
