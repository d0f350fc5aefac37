/** The page store `pages.kdb` of the ts engine (docs/FORMAT.md "Page store"). */
export {
  PAGE_BYTES, PAGE_FILE, PageStore, checkPageFile,
  type Bound, type Change, type CheckReport, type CheckpointReport, type CollectionChanges,
  type PageEntry, type PageFault, type PageMeta,
} from './store.js'
