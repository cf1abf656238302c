"""Files fastcert reads and writes: result logs (one writer; one reader per format: ours, Cohen et
al.'s, Kumar et al.'s, Lee et al.'s threshold files, Jia et al.'s counts), atomic files and npz."""
