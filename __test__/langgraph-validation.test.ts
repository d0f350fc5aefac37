/**
 * The LangGraph checkpoint-saver conformance suite (@langchain/langgraph-checkpoint-validation)
 * against KestrelSaver on both engines, on a directory and as a PostgreSQL replica.
 */
import { validate } from '@langchain/langgraph-checkpoint-validation'
import { KestrelSaver } from '../lib/langgraph/index.js'
import { ENGINES, tempDir } from './helpers.js'
import { newSchema, pgOptions, usePostgres } from './pg-helpers.js'

usePostgres()

for (const engine of ENGINES) {
  validate<KestrelSaver>({
    checkpointerName: `KestrelSaver (${engine})`,
    createCheckpointer: () => KestrelSaver.open(tempDir(), { engine }),
    destroyCheckpointer: (saver) => saver.close(),
  })
  validate<KestrelSaver>({
    checkpointerName: `KestrelSaver (${engine}, PostgreSQL replica)`,
    createCheckpointer: () => KestrelSaver.open(tempDir(), { engine, ...pgOptions(newSchema()) }),
    destroyCheckpointer: (saver) => saver.close(),
  })
}
