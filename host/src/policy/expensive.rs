//! Components built to be expensive to compile, for the loader's bounds: a
//! core module of many functions, each with many locals that all stay live
//! across many small blocks, which is what makes Cranelift's SSA
//! construction and register allocation slow and hungry. Wrapped in a
//! component that instantiates the module, so wasmtime compiles all of it.
//!
//! Used by the runtime's tests and by `benches/compile.rs`, which writes such
//! files for measuring `fledge policy inspect`.
use wasm_encoder::{
    CodeSection, Component, FunctionSection, InstanceSection, Instruction, Module, ModuleArg,
    ModuleSection, TypeSection, ValType,
};

/// The shape of the generated core module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub functions: u32,
    /// `i64` locals declared by every function.
    pub locals: u32,
    /// Blocks in every function body; each reads and writes locals and may
    /// branch out, so every local is live across every block.
    pub blocks: u32,
}

impl Shape {
    /// As many functions of `locals` and `blocks` as fit in about `bytes`.
    pub fn filling(bytes: usize, locals: u32, blocks: u32) -> Shape {
        let one = Shape {
            functions: 1,
            locals,
            blocks,
        };
        let per_function = core_module(&one).as_slice().len().max(1);
        let functions = u32::try_from((bytes / per_function).max(1)).unwrap_or(u32::MAX);
        Shape {
            functions,
            locals,
            blocks,
        }
    }
}

/// The costliest shape with `locals` locals per function within the given
/// bounds: bodies as large as blocks can make them under the body limit and
/// the locals-times-bytes limit, as many functions as the code and function
/// limits take. (Which `locals` costs most is measured, not derived: see
/// `benches/compile.rs`.)
pub fn worst_accepted(
    locals: u32,
    max_function_bytes: u32,
    max_locals_times_bytes: u64,
    max_code_bytes: u64,
    max_functions: u32,
) -> Shape {
    let body = |blocks: u32| {
        body_bytes(&Shape {
            functions: 1,
            locals,
            blocks,
        })
    };
    let limit = (max_function_bytes as usize).min(
        usize::try_from(max_locals_times_bytes / u64::from(locals.max(1))).unwrap_or(usize::MAX),
    );
    let base = body(0);
    let per_block = ((body(100) - base) / 100).max(1);
    let mut blocks = u32::try_from(limit.saturating_sub(base) / per_block).unwrap_or(0);
    while blocks > 0 && body(blocks) > limit {
        blocks -= 1;
    }
    // As many functions as fit, each body with its size prefix (at most 5
    // bytes) in the code section. Bodies differ by a few bytes of local
    // indices: when one is over the limit, all get a block less.
    'fill: loop {
        let shape = Shape {
            functions: 0,
            locals,
            blocks,
        };
        let mut code: u64 = 5;
        let mut functions = 0;
        while functions < max_functions {
            let bytes = function(&shape, functions).byte_len();
            if bytes > limit && blocks > 0 {
                blocks -= 1;
                continue 'fill;
            }
            if code + bytes as u64 + 5 > max_code_bytes {
                break;
            }
            code += bytes as u64 + 5;
            functions += 1;
        }
        return Shape { functions, ..shape };
    }
}

/// Bytes of the first function body of `shape` (all are alike in size up to
/// a few bytes of local indices).
fn body_bytes(shape: &Shape) -> usize {
    function(shape, 0).byte_len()
}

/// The core module of `shape`.
pub fn core_module(shape: &Shape) -> Module {
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I64]);
    let mut functions = FunctionSection::new();
    let mut code = CodeSection::new();
    for f in 0..shape.functions {
        functions.function(0);
        code.function(&function(shape, f));
    }
    let mut module = Module::new();
    module.section(&types).section(&functions).section(&code);
    module
}

/// Function `f` of `shape`.
fn function(shape: &Shape, f: u32) -> wasm_encoder::Function {
    let locals = shape.locals.max(3);
    let mut body = wasm_encoder::Function::new([(locals, ValType::I64)]);
    for b in 0..shape.blocks {
        // Spread the locals touched, seeded by the function, so no two
        // functions are alike.
        let at = |k: u32| (b.wrapping_mul(k).wrapping_add(f)) % locals;
        body.instruction(&Instruction::Block(wasm_encoder::BlockType::Empty))
            .instruction(&Instruction::LocalGet(at(1)))
            .instruction(&Instruction::I64Eqz)
            .instruction(&Instruction::BrIf(0))
            .instruction(&Instruction::LocalGet(at(7)))
            .instruction(&Instruction::LocalGet(at(13)))
            .instruction(&Instruction::I64Add)
            .instruction(&Instruction::LocalSet(at(1)))
            .instruction(&Instruction::End);
    }
    // Use every local at the end, so all of them are live throughout.
    body.instruction(&Instruction::I64Const(0));
    for l in 0..locals {
        body.instruction(&Instruction::LocalGet(l))
            .instruction(&Instruction::I64Add);
    }
    body.instruction(&Instruction::End);
    body
}

/// A component that instantiates the core module of `shape`.
pub fn component(shape: &Shape) -> Vec<u8> {
    let module = core_module(shape);
    let mut instances = InstanceSection::new();
    instances.instantiate(0, std::iter::empty::<(&str, ModuleArg)>());
    let mut component = Component::new();
    component
        .section(&ModuleSection(&module))
        .section(&instances);
    component.finish()
}

/// A component that imports `n` functions taking and returning strings,
/// lowers each for a core module that imports them all: `n` trampolines for
/// wasmtime to generate and compile, with few bytes each.
pub fn lowered_imports(n: u32) -> Vec<u8> {
    use wasm_encoder::{
        CanonicalOption, ComponentBuilder, ComponentTypeRef, ComponentValType, EntityType,
        ExportKind, ExportSection, ImportSection, MemorySection, MemoryType, PrimitiveValType,
    };
    // Module 0: the memory and realloc the lowered functions need.
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32; 4], [ValType::I32]);
    let mut functions = FunctionSection::new();
    functions.function(0);
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    let mut exports = ExportSection::new();
    exports
        .export("memory", ExportKind::Memory, 0)
        .export("realloc", ExportKind::Func, 0);
    let mut code = CodeSection::new();
    let mut realloc = wasm_encoder::Function::new([]);
    realloc
        .instruction(&Instruction::I32Const(0))
        .instruction(&Instruction::End);
    code.function(&realloc);
    let mut support = Module::new();
    support
        .section(&types)
        .section(&functions)
        .section(&memories)
        .section(&exports)
        .section(&code);
    // Module 1: imports every lowered function, `(a: string, b: string) ->
    // string` flattened to four pointers and lengths plus a return pointer.
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32; 5], []);
    let mut imports = ImportSection::new();
    for i in 0..n {
        imports.import("host", &format!("f{i}"), EntityType::Function(0));
    }
    let mut user = Module::new();
    user.section(&types).section(&imports);

    let mut c = ComponentBuilder::default();
    let string = ComponentValType::Primitive(PrimitiveValType::String);
    let (ty, mut f) = c.type_function(None);
    f.params([("a", string), ("b", string)])
        .result(Some(string));
    let support_module = c.core_module(None, &support);
    let user_module = c.core_module(None, &user);
    let support_instance = c.core_instantiate(
        None,
        support_module,
        std::iter::empty::<(&str, ModuleArg)>(),
    );
    let memory = c.core_alias_export(None, support_instance, "memory", ExportKind::Memory);
    let realloc = c.core_alias_export(None, support_instance, "realloc", ExportKind::Func);
    let names: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
    let lowered: Vec<u32> = names
        .iter()
        .map(|name| {
            let func = c.import(name.as_str(), ComponentTypeRef::Func(ty));
            c.lower_func(
                None,
                func,
                [
                    CanonicalOption::Memory(memory),
                    CanonicalOption::Realloc(realloc),
                    CanonicalOption::UTF8,
                ],
            )
        })
        .collect();
    let host = c.core_instantiate_exports(
        None,
        names
            .iter()
            .zip(&lowered)
            .map(|(name, &f)| (name.as_str(), ExportKind::Func, f)),
    );
    c.core_instantiate(None, user_module, [("host", ModuleArg::Instance(host))]);
    c.finish()
}
