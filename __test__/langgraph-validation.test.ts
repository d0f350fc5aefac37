/**
 * The LangGraph checkpoint-saver conformance suite (@langchain/langgraph-checkpoint-validation)
 * against KestrelSaver on both engines.
 */
import { validate } from '@langchain/langgraph-checkpoint-validation'
import { KestrelSaver } from '../lib/langgraph/index.js'
import { ENGINES, tempDir } from './helpers.js'

for (const engine of ENGINES) {
  validate<KestrelSaver>({
    checkpointerName: `KestrelSaver (${engine})`,
    createCheckpointer: () => KestrelSaver.open(tempDir(), { engine }),
    destroyCheckpointer: (saver) => saver.close(),
  })
}
